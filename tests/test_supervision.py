"""The distributed run supervises its processes (issue 20): a crashed child is restarted with backoff,
a child that keeps failing quickly is given up on, and the other services keep serving meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote

from services.checks import redact
from services.launcher import Policy, Supervisor
from tests.support import wait_for

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def test_redact_drops_credentials_of_one_or_several_hosts():
    assert redact("amqp://guest:secret@127.0.0.1:5672/%2F") == "amqp://127.0.0.1:5672/%2F"
    assert redact("amqp://u:p@h1:5672,h2:5673,h3/recept?heartbeat=30") == "amqp://h1:5672,h2:5673,h3/recept"
    assert redact("postgresql+psycopg://x:pw@127.0.0.1:1/orders") == "postgresql+psycopg://127.0.0.1:1/orders"
    assert "pw" not in redact("not a url pw")


def _supervise(children, policy):
    supervisor = Supervisor(children, policy=policy, poll=0.02)
    supervisor.start()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", supervisor.run()), daemon=True)
    thread.start()
    return supervisor, thread, result


def test_a_child_that_keeps_failing_quickly_is_given_up_while_the_others_run(capfd):
    env = dict(os.environ)
    policy = Policy(backoff=0.1, max_backoff=0.4, quick=5.0, give_up=4)
    supervisor, thread, result = _supervise(
        [
            ("bad worker", [PY, "-c", "import sys; sys.exit(3)"], env),
            ("steady api", [PY, "-c", "import time; time.sleep(120)"], env),
        ],
        policy,
    )
    bad, steady = supervisor.children
    try:
        assert wait_for(lambda: bad.given_up, timeout=20)
        assert bad.history == [3, 3, 3, 3]
        # Backoff doubles between quick failures: 0.1, 0.2, 0.4 s (capped at max_backoff).
        gaps = [b - a for a, b in zip(bad.starts, bad.starts[1:])]
        assert len(gaps) == 3
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4
        assert gaps[2] > gaps[0]
        # The steady child never stopped, and the supervisor keeps running for it.
        assert steady.pid is not None and len(steady.starts) == 1 and thread.is_alive()
    finally:
        supervisor.stop()
        thread.join(timeout=30)
    assert result["code"] == 1  # something was given up: say so when stopping
    assert steady.proc.poll() is not None  # stopped with the supervisor
    err = capfd.readouterr().err
    assert "bad worker exited with code 3" in err and "restarting in 0.1s" in err
    assert "giving up after 4 quick failures" in err


def test_a_killed_child_comes_back_and_a_long_run_resets_the_backoff():
    env = dict(os.environ)
    policy = Policy(backoff=0.2, max_backoff=5.0, quick=1.0, give_up=3)
    supervisor, thread, _ = _supervise([("worker", [PY, "-c", "import time; time.sleep(120)"], env)], policy)
    child = supervisor.children[0]
    try:
        for round_ in range(4):  # more kills than give_up: each came after a long run
            first = child.pid
            assert first is not None
            time.sleep(policy.quick + 0.1)
            os.kill(first, signal.SIGKILL)
            assert wait_for(lambda: child.pid not in (None, first), timeout=10), f"not restarted in round {round_}"
        assert child.history == [-signal.SIGKILL] * 4 and not child.given_up
        assert all(b - a < policy.quick + 2.0 for a, b in zip(child.starts, child.starts[1:]))
    finally:
        supervisor.stop()
        thread.join(timeout=30)
    assert child.proc.poll() is not None


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status
    except OSError:
        return 0


def _workers(launcher: int, service: str) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(launcher), "-f", f"services.{service}.worker"], capture_output=True, text=True
    ).stdout.split()
    return [int(pid) for pid in out]


def _consumers(vhost: str, queue: str) -> int:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return 0


def test_recept_up_restarts_a_killed_worker_while_the_apis_keep_answering(tmp_path, rabbit_url, make_postgres_db):
    """kill -9 of the orders worker: the apis answer throughout, the worker is back and consuming; a worker
    that cannot start (the audit's missing checkpoint key) is given up on without taking anything down."""
    from tests.test_recept_command import free_port, recept_env

    names = ("orders", "audit")
    ports = {s: free_port() for s in names}
    env = recept_env(
        tmp_path,
        **{f"RECEPT_{s.upper()}_DATABASE_URL": make_postgres_db(f"recept_{s}") for s in names},
        **{f"RECEPT_{s.upper()}_PORT": str(p) for s, p in ports.items()},
        GUNICORN_WORKERS="1",
        RECEPT_AUDIT_CHECKPOINT_KEY_FILE=str(tmp_path / "missing.pem"),
        RECEPT_SUPERVISE_BACKOFF="0.2",
        RECEPT_SUPERVISE_GIVE_UP="3",
    )
    launch = "import sys; from services.launcher import run_distributed; run_distributed(sys.argv[1], names=tuple(sys.argv[2:]))"
    log_path = tmp_path / "launcher.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PY, "-c", launch, rabbit_url, *names],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    vhost = unquote(rabbit_url.rsplit("/", 1)[1])
    try:
        health = {s: f"http://127.0.0.1:{p}/healthz" for s, p in ports.items()}
        assert wait_for(lambda: proc.poll() is not None or all(_get(u) == 200 for u in health.values()), 90)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert wait_for(lambda: _consumers(vhost, "recept.q.orders") == 1, 60, interval=0.5)
        assert wait_for(
            lambda: (
                "audit worker exited with code 2" in log_path.read_text()
                and "giving up after 3 quick failures" in log_path.read_text()
            ),
            60,
        )

        statuses: list[int] = []
        watching = threading.Event()

        def watch():
            while not watching.is_set():
                statuses.extend(_get(u) for u in health.values())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        (old,) = _workers(proc.pid, "orders")
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: _workers(proc.pid, "orders") not in ([], [old]), 30), log_path.read_text()[-3000:]
        assert wait_for(lambda: _consumers(vhost, "recept.q.orders") == 1, 60, interval=0.5)
        watching.set()
        watcher.join(timeout=10)
        assert proc.poll() is None
        assert statuses and set(statuses) == {200}, f"{statuses.count(200)} of {len(statuses)} health checks answered"
        text = log_path.read_text()
        assert "orders worker exited with signal SIGKILL" in text and "orders worker: restarting (restart 1)" in text
        assert _get(f"http://127.0.0.1:{ports['orders']}/readyz") == 200
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 1  # the audit worker was given up: the stop says so
    leftovers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, "children survived the stop"


def test_orphaned_grandchildren_are_reaped_and_stopped_with_the_launcher(tmp_path):
    """A child that dies before its own children (a gunicorn master killed mid-shutdown) hands them to
    the launcher, which reaps them and stops the ones still running: no zombie, nothing left over."""
    marker = f"recept-orphan-{os.getpid()}-{time.monotonic_ns()}"
    script = tmp_path / "supervise.py"
    script.write_text(f"""
import os, signal, sys, threading, time
from services.launcher import Policy, Supervisor
grandchild = "import time; time.sleep(120)  # {marker}"
parent = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', %r]); time.sleep(0.5)" % grandchild)
sup = Supervisor([("parent", [sys.executable, "-c", parent], dict(os.environ))],
                 policy=Policy(backoff=5, quick=0.1, give_up=100), poll=0.05, adopt_orphans=True)
threading.Timer(3.0, sup.stop).start()
sys.exit(sup.run())
""")
    done = subprocess.run(
        [PY, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert not left, f"{len(left)} grandchild process(es) outlived the launcher"
