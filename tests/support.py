"""Helpers for service tests: a token mint standing in for the auth service, a runtime
per test, and readers for what a service wrote to its outbox.

The mint is a fake only where auth is not the thing under test: it signs real EdDSA
JWTs that the service verifies exactly as it verifies the auth service's tokens.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from shared.bus import EVENTS, MemoryBackend
from shared.crypto import Keyring
from shared.service import Runtime, ServiceSpec
from shared.tokens import KeySet, RevocationList

ISSUER = "recept-auth"


class TokenMint:
    """Signs access tokens like the auth service does (EdDSA, with ``kid``)."""

    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex[:16]
        self.private_key = Ed25519PrivateKey.generate()
        self.revoked: set[str] = set()

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update(kid=self.kid, alg="EdDSA", use="sig")
        return {"keys": [jwk]}

    def keyset(self) -> KeySet:
        return KeySet(self.jwks)

    def revocations(self) -> RevocationList:
        """The revocation list auth would publish: the jti in ``self.revoked``, re-read on every check."""
        return RevocationList(lambda: {"jti": sorted(self.revoked)}, interval=0.0)

    def token(
        self,
        sub: str | None = None,
        tenant: str | None = "t1",
        roles: Iterable[str] = ("staff",),
        groups: Iterable[str] = (),
        ttl: int = 300,
        **claims,
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": sub or str(uuid.uuid4()),
            "tenant": tenant,
            "roles": list(roles),
            "groups": list(groups),
            "iat": now,
            "exp": now + ttl,
            "iss": ISSUER,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(self, **kwargs) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}


def make_runtime(
    spec: ServiceSpec,
    database_url: str,
    *,
    broker_url: str = "memory://",
    mint: TokenMint | None = None,
    keyring: Keyring | None = None,
    **overrides,
) -> Runtime:
    """Migrate ``spec``'s database and open a Runtime on it (memory bus unless told otherwise)."""
    if broker_url.startswith("memory://"):
        MemoryBackend.reset()
    mint = mint or TokenMint()
    config = spec.config(
        overrides={
            "DATABASE_URL": database_url,
            "BROKER_URL": broker_url,
            "keyring": keyring or Keyring.generate(),
            "keyset": mint.keyset(),
            "revocations": mint.revocations(),
            **overrides,
        },
        env={},
    )
    spec.migrate(config)
    return Runtime(spec, config)


def outbox_messages(runtime: Runtime, exchange: str = EVENTS) -> list[dict[str, Any]]:
    """Every message the service has written to its outbox on ``exchange``, oldest first."""
    table = runtime.tables.outbox
    with runtime.db.transaction() as s:
        rows = s.execute(
            select(table.c.message_id, table.c.payload).where(table.c.exchange == exchange).order_by(table.c.id)
        )
        return [json.loads(runtime.outbox.cipher.open(r.message_id, r.payload)) for r in rows]


def events_of(runtime: Runtime, type_name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in outbox_messages(runtime) if type_name is None or e["type"] == type_name]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def assert_no_plaintext(blob: bytes, values: Iterable[str]) -> None:
    """None of ``values`` appears in ``blob`` (a raw database dump, a log, an event)."""
    leaked = [v for v in values if v and v.encode() in blob]
    assert not leaked, f"{len(leaked)} personal value(s) found in plaintext"


def approve_preview(
    client,
    request_id: str,
    headers: dict,
    *,
    view_headers: dict | None = None,
    confirm=None,
    timeout: float = 30.0,
    script_root: str = "",
):
    """Wait for ``request_id``'s preview, then approve it as ``headers``' officer (issue 15).

    ``confirm(candidate) -> bool`` picks the candidates to confirm (default: every exact match, the
    way an approver who recognises the person confirms them); returns the approval's response.
    """
    base = f"{script_root}/api/v1/requests/{request_id}"

    def previewed():
        return client.get(base, headers=view_headers or headers).json

    assert wait_for(lambda: previewed()["status"] != "previewing", timeout=timeout), previewed()
    document = previewed()
    assert document["status"] == "awaiting_approval", document
    pick = confirm or (lambda c: c["match"] == "exact")
    chosen = [c["id"] for entry in document["preview"]["services"].values() for c in entry["candidates"] if pick(c)]
    return client.post(
        f"{base}/approve", json={"preview_hash": document["preview"]["hash"], "confirmed": chosen}, headers=headers
    )


class BrokerProxy:
    """A TCP relay to the real broker on a port of its own; ``stop()`` is the broker (or one cluster
    node) going away: every connection through it drops and new ones are refused until ``start()``,
    which listens on the same port again.  ``url(broker_url)`` is a broker URL through the proxy."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.start()

    def url(self, broker_url: str) -> str:
        """``broker_url`` (one host) with its host replaced by this proxy."""
        scheme, rest = broker_url.split("://", 1)
        userinfo, _at, host_and_tail = rest.rpartition("@")
        tail = host_and_tail[len(host_and_tail.split("/", 1)[0]) :]
        return f"{scheme}://{userinfo}@127.0.0.1:{self.port}{tail}"

    def start(self) -> None:
        """Accept connections (again) on the proxy's port."""
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        """Drop every connection and refuse new ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
