"""``./recept up`` as a new user meets it: embedded and distributed runs, clean stop, fast failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services import SERVICES, load
from shared.crypto import Keyring
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent

# These start ./recept itself as child processes (the embedded and the distributed run).
pytestmark = pytest.mark.integration


def get(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def wait_healthy(urls, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"./recept up exited early with {proc.returncode}")
        try:
            status, body = get(pending[0])
            if status == 200 and body.get("status") == "ok":
                pending.pop(0)
                continue
        except OSError:
            pass
        time.sleep(0.2)
    return pending


def recept_env(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEPT_")}
    keyring = tmp_path / "keyring.json"
    keyring.write_text(Keyring.generate().to_json())
    env["RECEPT_KEYRING_FILE"] = str(keyring)
    env["RECEPT_AUTH_SIGNING_KEYS_FILE"] = str(tmp_path / "signing-keys.json")
    env["RECEPT_AUDIT_CHECKPOINT_DIR"] = str(tmp_path / "checkpoints")
    key = tmp_path / "checkpoint-key.pem"  # a configured key must exist: only the dev default is generated
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    env["RECEPT_AUDIT_CHECKPOINT_KEY_FILE"] = str(key)
    env.update(extra)
    return env


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str]:
    """SIGTERM, then (exit code, everything it printed)."""
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("./recept up did not stop on SIGTERM") from None


def test_embedded_run_serves_every_service_on_one_port_and_stops_cleanly(tmp_path):
    port = free_port()
    env = recept_env(tmp_path, **{f"RECEPT_{s.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / s}.db" for s in SERVICES})
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        missing = wait_healthy([f"http://127.0.0.1:{port}/{s}/healthz" for s in SERVICES], proc=proc)
        assert not missing, f"not answering: {missing}"
        for s in SERVICES:
            status, body = get(f"http://127.0.0.1:{port}/{s}/readyz")
            assert status == 200 and body["status"] == "ready"
            status, spec = get(f"http://127.0.0.1:{port}/{s}/openapi.json")
            assert spec["openapi"].startswith("3.1")
    finally:
        code, output = stop(proc)
    assert code == 0, output
    for s in SERVICES:
        assert f"http://127.0.0.1:{port}/{s}/" in output


def test_distributed_run_starts_an_api_and_a_worker_per_service(tmp_path, rabbit_url, make_postgres_db):
    ports = {s: free_port() for s in SERVICES}
    env = recept_env(
        tmp_path,
        **{f"RECEPT_{s.upper()}_DATABASE_URL": make_postgres_db(f"recept_{s}") for s in SERVICES},
        **{f"RECEPT_{s.upper()}_PORT": str(p) for s, p in ports.items()},
        GUNICORN_WORKERS="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--broker", rabbit_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        missing = wait_healthy([f"http://127.0.0.1:{p}/healthz" for p in ports.values()], timeout=90, proc=proc)
        assert not missing, f"not answering: {missing}"
        for name, p in ports.items():
            status, body = get(f"http://127.0.0.1:{p}/readyz", timeout=10)
            assert status == 200 and body["status"] == "ready" and body["checks"]["database"] == "ok"
            assert "broker" not in body["checks"]  # readiness is "can serve its API" (issue 20)
            if load(name).has_worker:
                status, health = get(f"http://127.0.0.1:{p}/healthz", timeout=10)
                assert status == 200 and health["checks"]["broker"] == "ok"
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == sum(2 if load(s).has_worker else 1 for s in SERVICES)
    finally:
        code, output = stop(proc, timeout=60)
    assert code == 0, output
    leftovers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, "children survived the stop"


def test_unreachable_broker_fails_fast_without_leaking_credentials(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--broker", "amqp://guest:topsecret@127.0.0.1:1/"],
        cwd=ROOT,
        env=recept_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "cannot reach the broker at amqp://127.0.0.1:1/" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
    assert time.monotonic() - started < 30


def test_unreachable_database_fails_fast(tmp_path, rabbit_url):
    env = recept_env(tmp_path, RECEPT_ORDERS_DATABASE_URL="postgresql://x:pw@127.0.0.1:1/orders")
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate", "orders"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        result.returncode != 0
        and "cannot reach the orders database at postgresql://127.0.0.1:1/orders" in result.stderr
    )
    assert "pw@" not in result.stderr


def test_a_worker_with_a_bad_setting_stops_at_start_instead_of_dead_lettering(tmp_path, rabbit_url, postgres_url):
    """A configured audit checkpoint key that is missing must stop the worker, not lose events."""
    env = recept_env(
        tmp_path,
        RECEPT_BROKER_URL=rabbit_url,
        RECEPT_AUDIT_DATABASE_URL=postgres_url,
        RECEPT_AUDIT_CHECKPOINT_KEY_FILE=str(tmp_path / "missing.pem"),
    )
    subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate", "audit"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = subprocess.run(
        [sys.executable, "-m", "services.audit.worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "worker cannot start" in result.stderr and "missing.pem" in result.stderr


def test_keys_command_prints_a_keyring_and_rotates_a_file(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys"],
        cwd=ROOT,
        env=recept_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first = Keyring.from_json(out)
    path = tmp_path / "ring.json"
    path.write_text(out)
    subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "--rotate", str(path)],
        cwd=ROOT,
        env=recept_env(tmp_path),
        capture_output=True,
        check=True,
    )
    rotated = Keyring.from_json(path.read_text())
    assert rotated.primary_id != first.primary_id and first.primary_id in rotated.key_ids
    assert oct(path.stat().st_mode & 0o777) == "0o600"
