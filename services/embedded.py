"""The embedded run: every service in one process on one port, each under /<service>/.

The bus is kombu's in-memory transport and each service keeps its own SQLite file
under var/, so it runs on a laptop with nothing else installed.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from services import SERVICES, load
from shared.logs import configure_logging

log = logging.getLogger("recept.embedded")


def build(port: int, overrides: dict | None = None, names=SERVICES):
    """(wsgi app, runtimes) for the embedded system; used by ``run_embedded`` and tests."""
    os.environ.setdefault("RECEPT_JWKS_URL", f"http://127.0.0.1:{port}/auth/.well-known/jwks.json")
    # One per run, shared by auth and the portal: auth throttles portal sign-ins per browser address.
    os.environ.setdefault("RECEPT_FORWARDING_TOKEN", secrets.token_urlsafe(32))
    runtimes, apps = {}, {}
    for name in names:
        spec = load(name)
        own = {}
        if name == "portal":
            from services.portal import embedded_overrides

            own = embedded_overrides(port)  # the portal reaches auth, gdpr and audit on this port
        config = spec.config(overrides={"BROKER_URL": "memory://", **own, **(overrides or {}).get(name, {})})
        spec.migrate(config)
        runtime = spec.runtime(config)
        runtimes[name] = runtime
        apps[f"/{name}"] = spec.create_app(runtime=runtime)
    # Declare every queue before any worker publishes, so nothing is unroutable at start-up.
    for runtime in runtimes.values():
        if runtime.spec.has_worker:
            runtime.declare()

    def index(environ, start_response):
        body = ("Recept services: " + ", ".join(f"/{n}/" for n in names) + "\n").encode()
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return DispatcherMiddleware(index, apps), runtimes


def run_embedded(host: str = "127.0.0.1", port: int = 8080) -> None:
    configure_logging("embedded", os.environ.get("RECEPT_LOG_LEVEL", "INFO"))
    app, runtimes = build(port)
    stop = threading.Event()
    threads = []
    for runtime in runtimes.values():
        if runtime.spec.has_worker:
            threads += runtime.start_worker_threads(stop)
    server = make_server(host, port, app, threaded=True)

    def shutdown(*_):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"recept: embedded run on http://{host}:{port}/ (in-memory bus, SQLite under var/)", flush=True)
    for name in runtimes:
        print(f"recept:   {name:<7} http://{host}:{port}/{name}/  (healthz, readyz, openapi.json)", flush=True)
    print("recept: Ctrl-C stops everything", flush=True)
    server.serve_forever()
    for thread in threads:
        thread.join(timeout=5)
    print("recept: stopped", flush=True)
