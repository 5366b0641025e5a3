"""Real processes for the tests that start them (the e2e and chaos tiers, the cluster test, gunicorn and
worker tests): free ports, polling with a named deadline, the secrets a launched system reads from
files, its environment, and starting and stopping a process in a process group of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.crypto import Keyring

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def readyz(base_url: str, timeout: float = 5) -> int:
    """The status of ``GET /readyz`` at ``base_url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(base_url + "/readyz", timeout=timeout) as reply:
            status: int = reply.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def write_secret(path: Path, content: bytes) -> Path:
    """A secret file as the services expect a mounted one: readable by its owner only."""
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def signing_key_pem() -> bytes:
    """A fresh Ed25519 private key in PEM (the audit's checkpoint key)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def system_env(
    work: Path,
    database_urls: Mapping[str, str],
    ports: Mapping[str, int],
    settings: Mapping[str, str],
    *,
    drop: tuple[str, ...] = ("RECEPT_",),
) -> dict[str, str]:
    """The environment of a launched system: this process's without the variables starting with ``drop``;
    a fresh keyring and checkpoint key in ``work``; one database and port per service; ``settings`` last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        {
            "RECEPT_KEYRING_FILE": str(write_secret(work / "keyring.json", Keyring.generate().to_json().encode())),
            "RECEPT_AUTH_SIGNING_KEYS_FILE": str(work / "signing-keys.json"),
            "RECEPT_AUDIT_CHECKPOINT_DIR": str(work / "checkpoints"),
            # The audit's checkpoint key is a mounted secret in production: configured, it must exist (docs/audit.md).
            "RECEPT_AUDIT_CHECKPOINT_KEY_FILE": str(write_secret(work / "checkpoint-key.pem", signing_key_pem())),
            "GUNICORN_WORKERS": "1",
            "PYTHONUNBUFFERED": "1",
            **{f"RECEPT_{n.upper()}_DATABASE_URL": url for n, url in database_urls.items()},
            **{f"RECEPT_{n.upper()}_PORT": str(port) for n, port in ports.items()},
            **settings,
        }
    )
    return env


def start_logged(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the repository root in a new process group, its output into ``log_path``
    (a file, not a pipe: a full pipe would block the services' logging)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            list(argv), cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    """SIGTERM the launcher (it stops its children) and wait; False when it had to be killed with its group."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
    return True


def start_gunicorn(port: int, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """One service's api as production runs it (deploy/gunicorn.conf.py, ``RECEPT_SERVICE`` in ``env``)."""
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    config = str(ROOT / "deploy" / "gunicorn.conf.py")
    return start_logged([gunicorn, "-c", config, "--bind", f"127.0.0.1:{port}", "services.wsgi:app"], env, log_path)


def run_cli(env: Mapping[str, str], *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``./recept <argv>`` with ``env``, to its end (at most two minutes), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *argv],
        cwd=ROOT,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
