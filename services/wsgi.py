"""WSGI entry for gunicorn: ``RECEPT_SERVICE=orders gunicorn services.wsgi:app``."""

import os

from werkzeug.middleware.proxy_fix import ProxyFix

from services import load
from shared.config import Setting
from shared.logs import configure_logging

# Read here, not by a service: it says how the process is reached, not how a service behaves.
BEHIND_PROXY = Setting(
    "BEHIND_PROXY",
    bool,
    False,
    "trust one reverse proxy's X-Forwarded-For/-Proto/-Prefix (the compose and Kubernetes runs)",
)
BEHIND_PROXY_VARIABLE = "RECEPT_BEHIND_PROXY"

_spec = load(os.environ["RECEPT_SERVICE"])
_config = _spec.config()
configure_logging(_spec.name, _config["LOG_LEVEL"])
app = _spec.create_app(_config)
if BEHIND_PROXY.parse(os.environ.get(BEHIND_PROXY_VARIABLE, ""), BEHIND_PROXY_VARIABLE):
    # Exactly one trusted hop: auth's per-address brute-force block needs the client's address
    # (X-Forwarded-For), and the portal builds its links, redirects and cookie path under the
    # proxy's /portal/ (X-Forwarded-Prefix -> SCRIPT_NAME).  Off by default, because a process
    # reached directly would let any client forge these headers.  Host is not taken over.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=0, x_port=0, x_prefix=1)
