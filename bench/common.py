"""Helpers the benchmarks share: the raw pika baseline, a distributed system of real processes,
a JWKS server for minted tokens, memory readings (PSS and RSS per process) and percentiles."""

from __future__ import annotations

import http.client
import http.server
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from bench.runner import ROOT, Context


def raw_pika_round_trip(url: str, count: int, body: bytes) -> float:
    """Baseline: raw pika publish with asynchronous confirms, then consume with batched acks.

    Returns messages per second over both halves (the time to move ``count`` messages through).
    """
    import pika

    params = pika.URLParameters(url)
    setup = pika.BlockingConnection(params)
    ch = setup.channel()
    ch.exchange_declare("bench.raw", exchange_type="topic", durable=True)
    ch.queue_declare("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind("bench.raw", "bench.raw", routing_key="#")
    setup.close()

    started = time.perf_counter()
    state = {"acked": 0, "sent": 0}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(channel):
        def on_confirm(frame):
            m = frame.method
            state["acked"] = m.delivery_tag if m.multiple else state["acked"] + 1
            if state["acked"] >= count:
                channel.connection.close()

        def publish_some():
            # Keep a bounded window in flight, as a real asynchronous publisher would.
            while state["sent"] < count and state["sent"] - state["acked"] < 2000:
                channel.basic_publish(
                    "bench.raw",
                    "bench.event",
                    body,
                    pika.BasicProperties(delivery_mode=2, message_id=str(uuid.uuid4())),
                )
                state["sent"] += 1
            if state["sent"] < count:
                channel.connection.ioloop.call_later(0.001, publish_some)

        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _f: publish_some())

    conn = pika.SelectConnection(params, on_open_callback=on_open, on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    conn.ioloop.close()
    if state["acked"] < count:
        # pika swallows an exception raised in a callback and just closes the connection.
        raise RuntimeError(f"baseline publisher stopped after {state['acked']} of {count} confirms")

    consumer = pika.BlockingConnection(params)
    ch = consumer.channel()
    ch.basic_qos(prefetch_count=500)
    received = 0
    last_tag = None
    for method, _props, _body in ch.consume("bench.raw", inactivity_timeout=5):
        if method is None:
            break
        received += 1
        last_tag = method.delivery_tag
        if received % 200 == 0 or received == count:
            ch.basic_ack(last_tag, multiple=True)
        if received >= count:
            break
    ch.cancel()
    consumer.close()
    elapsed = time.perf_counter() - started
    if received != count:
        raise RuntimeError(f"baseline lost messages: {received} of {count}")
    return count / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Client:
    """A keep-alive HTTP/1.1 connection with JSON in and out."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        self.conn.request("POST", path, json.dumps(body), self.headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def get(self, path: str) -> tuple[int, dict]:
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def reconnect(self) -> None:
        """A fresh connection: gunicorn closes one that stayed idle past its keep-alive (5 s)."""
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def close(self) -> None:
        self.conn.close()


class JwksServer:
    """Serves a TokenMint's public keys over HTTP, standing in for the auth service's JWKS."""

    def __init__(self, mint) -> None:
        keys = json.dumps(mint.jwks()).encode()
        revocations = json.dumps({"jti": []}).encode()  # services also read auth's revocation list

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                body = revocations if self.path.endswith("/revocations.json") else keys
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size of one process in KiB (0 when it is gone).

    PSS divides each shared page among the processes that map it, so the PSS of a set of processes
    adds up to the memory they take together; RSS would count a page shared by 20 processes 20 times.
    """
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def _parent(pid: int) -> int:
    try:
        # The field after the command name, which is in parentheses and may hold spaces.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def process_kind(pid: int, ports: dict[int, str]) -> str:
    """What a process of the system is, from its command line: ``orders api master``, ``orders api
    worker``, ``orders worker`` or ``launcher`` (``ports`` maps an api's port to its service)."""
    argv = _cmdline(pid)
    if any(Path(a).name == "gunicorn" for a in argv[:2]):
        bind = argv[argv.index("--bind") + 1] if "--bind" in argv[:-1] else ""
        service = ports.get(int(bind.rsplit(":", 1)[1]), "?") if ":" in bind else "?"
        parent = _cmdline(_parent(pid))
        role = "worker" if any(Path(a).name == "gunicorn" for a in parent[:2]) else "master"
        return f"{service} api {role}"
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1].endswith(".worker"):
        return argv[argv.index("-m") + 1].split(".")[1] + " worker"
    return "launcher"


def process_group(pgid: int) -> list[int]:
    """Every live process in a process group (the launcher and all its children)."""
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class System:
    """The distributed run (``./recept up --broker``): every service's api under gunicorn and its worker
    as separate processes, on fresh PostgreSQL databases and a fresh RabbitMQ vhost."""

    def __init__(self, ctx: Context, services: tuple[str, ...] | None = None, **env) -> None:
        from services import SERVICES
        from shared.crypto import Keyring

        self.ctx = ctx
        self.services = tuple(services or SERVICES)
        self.broker = ctx.vhost()
        self.dir = Path(ctx.tempdir())
        self.keyring = Keyring.generate()
        (self.dir / "keyring.json").write_text(self.keyring.to_json())
        (self.dir / "checkpoint-key.pem").write_bytes(_ed25519_pem())
        self.ports = {s: free_port() for s in self.services}
        self.urls = {s: ctx.postgres(f"recept_bench_{s}") for s in self.services}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RECEPT_")}
        self.env.update(
            {
                "RECEPT_KEYRING_FILE": str(self.dir / "keyring.json"),
                "RECEPT_AUTH_SIGNING_KEYS_FILE": str(self.dir / "signing-keys.json"),
                "RECEPT_AUDIT_CHECKPOINT_DIR": str(self.dir / "checkpoints"),
                "RECEPT_AUDIT_CHECKPOINT_KEY_FILE": str(self.dir / "checkpoint-key.pem"),
                "RECEPT_LOG_LEVEL": "WARNING",
                **{f"RECEPT_{s.upper()}_DATABASE_URL": u for s, u in self.urls.items()},
                **{f"RECEPT_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
                **env,
            }
        )
        self.proc: subprocess.Popen | None = None
        ctx.cleanup.append(self.stop)

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def start(self, timeout: float = 120) -> System:
        import urllib.request

        self.log = open(self.dir / "system.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, self.broker, *self.services],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the system exited; see {self.dir / 'system.log'}")
            for s in self.services:
                try:
                    with urllib.request.urlopen(self.url(s, "/readyz"), timeout=2) as r:
                        if r.status != 200:
                            return False
                except OSError:
                    return False
            return True

        if not wait_until(healthy, timeout, 0.5):
            raise RuntimeError(f"the system did not become ready; see {self.dir / 'system.log'}")
        return self

    def pids(self) -> list[int]:
        return process_group(self.proc.pid) if self.proc else []

    def rss_mib(self) -> float:
        """Resident memory of every process of the system (launcher, gunicorn masters and workers, workers)."""
        return sum(rss_kib(p) for p in self.pids()) / 1024

    def pss_mib(self) -> float:
        """Proportional memory (PSS) of every process of the system: what they take together."""
        return sum(pss_kib(p) for p in self.pids()) / 1024

    def memory(self) -> list[tuple[str, float, float]]:
        """(kind, PSS MiB, RSS MiB) of every process of the system, sorted by kind."""
        ports = {port: service for service, port in self.ports.items()}
        rows = [(process_kind(p, ports), pss_kib(p) / 1024, rss_kib(p) / 1024) for p in self.pids()]
        return sorted(row for row in rows if row[2] > 0)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def _ed25519_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def plain_url(url: str) -> str:
    """A SQLAlchemy psycopg URL as a libpq one, for psycopg.connect and COPY."""
    return url.replace("postgresql+psycopg://", "postgresql://")


# The launcher with a chosen subset of services (run_distributed takes ``names``).
_LAUNCH = (
    "import sys; from services.launcher import run_distributed; run_distributed(sys.argv[1], names=tuple(sys.argv[2:]))"
)
