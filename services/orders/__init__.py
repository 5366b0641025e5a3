"""The orders service: order registers, individuals (AIVO "Individ"), assortment lists and orders (R7-R9, R11, R12, R16)."""

from pathlib import Path

from shared.config import Setting
from shared.service import ServiceSpec

from .models import metadata, tables

NAME = "orders"


SPEC = ServiceSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    bootstrap="services.orders.bootstrap",
    settings=(
        Setting(
            "BLIND_INDEX_BITS",
            int,
            None,
            "bits kept of each blind index; default: from PLANNED_SUBJECTS "
            "(changing either means ./recept orders reindex)",
            minimum=1,
        ),
        Setting("DEFAULT_TIMEZONE", str, "Europe/Stockholm", "time zone of new registers' order deadlines"),
        Setting(
            "RETAINED_K",
            int,
            5,
            "k: an order retained after an erasure must describe at least k people "
            "(unit, register and date are generalised until it does)",
            minimum=2,
        ),
        Setting(
            "RETENTION_INTERVAL",
            float,
            86400.0,
            "seconds between purges of orders past the bookkeeping retention period",
            minimum=1,
        ),
    ),
    description="Order registers, individuals, assortment lists and orders: encrypted, access-controlled, "
    "every change logged.",
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.orders:create_app()`)."""
    return SPEC.create_app(config)
