"""gunicorn entry for the order-placement benchmark: the orders app and, in the same process, a baseline
route (POST /bench/plain-order) that inserts the same order row in plaintext, without token, access check or
event. It lives here, not in the service, so no benchmark code ships in the orders service."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, MetaData, String, Table

metadata = MetaData()
# The columns of services.orders.models.orders, without foreign keys or indexes beyond the key.
plain_orders = Table(
    "bench_plain_orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(100), nullable=False),
    Column("register_id", String(36), nullable=False),
    Column("unit_id", String(36), nullable=False),
    Column("individual_id", String(36), nullable=True),
    Column("delivery_point_id", String(36), nullable=True),
    Column("article_id", String(36), nullable=False),
    Column("delivery_date", Date, nullable=False),
    Column("meal", String(20), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("diet_variant", String(40), nullable=True),
    Column("status", String(20), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("placed_by", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deidentified", Boolean, nullable=False),
)


def create_app():
    """The orders app (as services/wsgi.py builds it) plus the baseline route."""
    from flask import jsonify, request

    from services import load
    from shared.logs import configure_logging

    spec = load("orders")
    config = spec.config()
    configure_logging(spec.name, config["LOG_LEVEL"])
    app = spec.create_app(config)
    db = app.extensions["recept"].db

    @app.post("/bench/plain-order")
    def plain_order():
        body = request.get_json()
        now = datetime.now(UTC)
        row = {
            "id": str(uuid.uuid4()),
            "tenant": body["tenant"],
            "register_id": body["register_id"],
            "unit_id": body["unit_id"],
            "individual_id": body.get("individual_id"),
            "delivery_point_id": None,
            "article_id": body["article_id"],
            "delivery_date": date.fromisoformat(body["delivery_date"]),
            "meal": body["meal"],
            "quantity": body["quantity"],
            "diet_variant": None,
            "status": "placed",
            "placed_at": now,
            "placed_by": "bench",
            "updated_at": now,
            "deidentified": False,
        }
        with db.transaction() as s:
            s.execute(plain_orders.insert().values(**row))
        return jsonify({"id": row["id"]}), 201

    return app
