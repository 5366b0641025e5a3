"""The distributed run: each service's api (gunicorn) and worker as separate processes.

Every child gets the broker URL and its own database URL
(``RECEPT_<SERVICE>_DATABASE_URL``, a SQLite file under var/ by default); the
launcher migrates first, prints where each api listens, and stops every child on
Ctrl-C / SIGTERM — or when any child dies, so a half-running system never looks healthy.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from services import PORTS, SERVICES, load
from shared.config import ROOT


def child_env(name: str, broker: str, host: str) -> dict[str, str]:
    # One per run, the same in every child: auth believes the browser address the portal forwards.
    os.environ.setdefault("RECEPT_FORWARDING_TOKEN", secrets.token_urlsafe(32))
    env = dict(os.environ)
    env["RECEPT_BROKER_URL"] = broker
    env["RECEPT_SERVICE"] = name
    env.setdefault("RECEPT_JWKS_URL", f"http://127.0.0.1:{port_of('auth')}/.well-known/jwks.json")
    env["PYTHONUNBUFFERED"] = "1"
    if name == "portal":
        from services.portal import distributed_env

        env.update(distributed_env({n: port_of(n) for n in ("auth", "gdpr", "audit")}, host="127.0.0.1"))
    return env


def port_of(name: str) -> int:
    """8081..8085 by default; RECEPT_<SERVICE>_PORT moves one (tests, crowded hosts)."""
    return int(os.environ.get(f"RECEPT_{name.upper()}_PORT", PORTS[name]))


def commands(name: str, host: str) -> list[tuple[str, list[str]]]:
    python = sys.executable
    gunicorn = str(Path(python).with_name("gunicorn"))
    processes = [
        ("api", [gunicorn, "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "--bind", f"{host}:{port_of(name)}",
                 "services.wsgi:app"]),
    ]
    if load(name).has_worker:
        processes.append(("worker", [python, "-m", f"services.{name}.worker"]))
    return processes


def run_distributed(broker: str, host: str = "127.0.0.1", names=SERVICES) -> None:
    from services.cli import check_database, redact

    for name in names:
        spec = load(name)
        config = spec.config(env={**os.environ, "RECEPT_BROKER_URL": broker})
        check_database(name, config["DATABASE_URL"])
        spec.migrate(config)
    children: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"recept: distributed run against {redact(broker)}", flush=True)
    for name in names:
        for role, argv in commands(name, host):
            children.append((f"{name} {role}", subprocess.Popen(argv, env=child_env(name, broker, host), cwd=ROOT)))
        roles = "api + worker" if load(name).has_worker else "api"
        print(f"recept:   {name:<7} http://{host}:{port_of(name)}/  ({roles})", flush=True)
    print("recept: Ctrl-C stops everything", flush=True)
    exit_code = 0
    try:
        while not stopping:
            for label, proc in children:
                if proc.poll() is not None:
                    print(f"recept: {label} exited with {proc.returncode}; stopping the rest", file=sys.stderr,
                          flush=True)
                    stopping, exit_code = True, 1
                    break
            time.sleep(0.5)
    finally:
        for _label, proc in children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for _label, proc in children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print("recept: stopped", flush=True)
    if exit_code:
        raise SystemExit(exit_code)
