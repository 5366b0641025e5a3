"""Logins per second, local (Argon2id) and directory (LDAP bind), against the raw Argon2id hash rate."""

from __future__ import annotations

import time
from pathlib import Path

from bench.runner import Context, Figure, benchmark


def _timed_logins(harness, tenant: str, username: str, password: str, count: int) -> float:
    """Logins per second through the service's HTTP endpoint, one after another."""
    started = time.perf_counter()
    for _ in range(count):
        response = harness.login(tenant, username, password)
        if response.status_code != 200:
            raise RuntimeError(f"login failed with {response.status_code}")
    return count / (time.perf_counter() - started)


@benchmark("login", "logins/s through POST /api/v1/auth/login (PostgreSQL), local Argon2id and directory")
def login(ctx: Context) -> list[Figure]:
    from tests.auth.conftest import DEMO, PASSWORD, build
    from tests.ldap_server import SlapdServer

    count = ctx.size(200, 5)
    workdir = Path(ctx.tempdir())
    harness = build(ctx.postgres(), workdir)
    directory = SlapdServer(workdir / "slapd").start()
    try:
        harness.tenant("local")
        harness.user("local", "bench-user")
        harness.tenant("north")
        harness.directory("north", directory)
        # One warm-up login each: the directory user is created just in time on the first.
        _timed_logins(harness, "local", "bench-user", PASSWORD, 1)
        _timed_logins(harness, "north", "alice", DEMO["alice"], 1)
        local = _timed_logins(harness, "local", "bench-user", PASSWORD, count)
        remote = _timed_logins(harness, "north", "alice", DEMO["alice"], count)
        hasher = harness.auth.hasher
        encoded = hasher.hash(PASSWORD)
        started = time.perf_counter()
        for _ in range(count):
            if not hasher.verify(PASSWORD, encoded):
                raise RuntimeError("the raw hash did not verify")
        raw = count / (time.perf_counter() - started)
    finally:
        directory.stop()
        harness.runtime.db.dispose()
    params = f"m={hasher.memory_kib} KiB, t={hasher.iterations}, p={hasher.lanes}"
    return [
        Figure(
            "local logins (Argon2id verify, tokens, history)", local, "logins/s", raw, f"raw Argon2id verify, {params}"
        ),
        Figure(
            "directory logins (LDAP search + bind, tokens, history)",
            remote,
            "logins/s",
            raw,
            f"raw Argon2id verify, {params}",
        ),
    ]
