"""WSGI entry for gunicorn: ``RECEPT_SERVICE=orders gunicorn services.wsgi:app``."""
import os

from services import load
from shared.logs import configure_logging

_spec = load(os.environ["RECEPT_SERVICE"])
_config = _spec.config()
configure_logging(_spec.name, _config["LOG_LEVEL"])
app = _spec.create_app(_config)
