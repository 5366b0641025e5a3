"""The whole system with the portal in one process on a real local port (the embedded run: in-memory
bus, SQLite per service, every worker's loops as threads), for the portal's Chromium tests against the
REAL services (test_system.py, test_public_browser.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services import SERVICES
from services.portal import SPEC, embedded_overrides
from shared.bus import MemoryBackend
from shared.crypto import Keyring
from tests.processes import free_port


@contextmanager
def embedded_portal(
    tmp: Path,
    *,
    settings: Callable[[int], dict[str, dict[str, Any]]] = lambda port: {},
    seed: Callable[[Any, Any], None] = lambda auth, s: None,
) -> Iterator[int]:
    """Start every service and the portal at ``/portal/`` on a free port (yielded), workers running.

    ``settings(port)`` adds settings per service; ``seed(auth, session)`` creates tenants and users in
    the auth service before the workers start."""
    from werkzeug.serving import make_server

    from services.embedded import build

    port = free_port()
    patch = pytest.MonkeyPatch()
    patch.setenv("RECEPT_JWKS_URL", f"http://127.0.0.1:{port}/auth/.well-known/jwks.json")
    patch.setenv("RECEPT_KEYRING", Keyring.generate().to_json())
    patch.setenv("RECEPT_AUTH_SIGNING_KEYS_FILE", str(tmp / "signing-keys.json"))
    patch.setenv("RECEPT_AUDIT_CHECKPOINT_DIR", str(tmp / "checkpoints"))
    patch.setenv("RECEPT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp / "checkpoint-key.pem"))
    patch.setenv("RECEPT_ANNOUNCE_INTERVAL", "1")
    patch.setenv("RECEPT_AUTH_TENANT_ANNOUNCE_INTERVAL", "1")
    MemoryBackend.reset()
    overrides: dict[str, dict[str, Any]] = {name: {"DATABASE_URL": f"sqlite:///{tmp / name}.db"} for name in SERVICES}
    for name, extra in settings(port).items():
        overrides[name].update(extra)
    wsgi, runtimes = build(port, overrides)
    config = SPEC.config(
        overrides={
            "DATABASE_URL": f"sqlite:///{tmp / 'portal.db'}",
            "PAGE_REFRESH_SECONDS": 1,
            **embedded_overrides(port),
        }
    )
    SPEC.migrate(config)
    portal_app = SPEC.create_app(config)
    wsgi.mounts["/portal"] = portal_app
    auth = runtimes["auth"].domain
    with auth.db.transaction() as s:
        seed(auth, s)
    stop = threading.Event()
    threads = [t for rt in runtimes.values() for t in rt.start_worker_threads(stop)]
    server = make_server("127.0.0.1", port, wsgi, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for rt in runtimes.values():
            rt.db.dispose()
        portal_app.extensions["recept"].db.dispose()
        patch.undo()
