"""The distributed run: each service's api (gunicorn) and worker as separate processes, supervised.

Every child gets the broker URL and its own database URL
(``RECEPT_<SERVICE>_DATABASE_URL``, a SQLite file under var/ by default); the
launcher migrates first, prints where each api listens, and then supervises: a child
that exits is started again after a backoff (0.5 s, doubling up to 30 s), and only a
child that keeps failing quickly is given up on — the other services keep serving
meanwhile. Ctrl-C / SIGTERM stops every child (SIGKILL after 30 s). docs/operations.md describes the
settings (``RECEPT_SUPERVISE_*``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services import PORTS, SERVICES, load
from services.checks import check_database, redact, say
from shared.config import ROOT


def child_env(name: str, broker: str, host: str, role: str = "api") -> dict[str, str]:
    # One per run, the same in every child: auth believes the browser address the portal forwards.
    os.environ.setdefault("RECEPT_FORWARDING_TOKEN", secrets.token_urlsafe(32))
    env = dict(os.environ)
    env["RECEPT_BROKER_URL"] = broker
    env["RECEPT_SERVICE"] = name
    # Metrics: a worker listens on its own port (the api's + 1000 unless configured, docs/operations.md);
    # gunicorn gets a multi-process directory of its own from deploy/gunicorn.conf.py.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if role == "worker":
        env[f"RECEPT_{name.upper()}_METRICS_PORT"] = str(metrics_port_of(name))
    env.setdefault("RECEPT_JWKS_URL", f"http://127.0.0.1:{port_of('auth')}/.well-known/jwks.json")
    env["PYTHONUNBUFFERED"] = "1"
    if name == "portal":
        from services.portal import distributed_env

        env.update(distributed_env({n: port_of(n) for n in ("auth", "gdpr", "audit")}, host="127.0.0.1"))
    return env


def metrics_port_of(name: str) -> int:
    """Where the launcher puts a worker's /metrics: RECEPT_<SERVICE>_METRICS_PORT, else the api's port + 1000
    (9081..9085); RECEPT_METRICS_PORT=0 turns them off. One port for all would make the workers collide."""
    from shared.metrics import metrics_port

    if f"RECEPT_{name.upper()}_METRICS_PORT" in os.environ:
        return metrics_port(name)[1]
    if os.environ.get("RECEPT_METRICS_PORT") == "0":
        return 0
    return port_of(name) + 1000


def port_of(name: str) -> int:
    """8081..8085 by default; RECEPT_<SERVICE>_PORT moves one (tests, crowded hosts)."""
    return int(os.environ.get(f"RECEPT_{name.upper()}_PORT", PORTS[name]))


def commands(name: str, host: str) -> list[tuple[str, list[str]]]:
    python = sys.executable
    gunicorn = str(Path(python).with_name("gunicorn"))
    processes = [
        (
            "api",
            [
                gunicorn,
                "-c",
                str(ROOT / "deploy" / "gunicorn.conf.py"),
                "--bind",
                f"{host}:{port_of(name)}",
                "services.wsgi:app",
            ],
        ),
    ]
    if load(name).has_worker:
        processes.append(("worker", [python, "-m", f"services.{name}.worker"]))
    return processes


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"recept: {name} must be a number of seconds or a count") from None
    if value <= 0:
        raise SystemExit(f"recept: {name} must be greater than 0")
    return value


@dataclass(frozen=True)
class Policy:
    """How children are restarted.

    A run shorter than ``quick`` seconds counts as a quick failure; ``give_up`` quick failures in a
    row and the child is left down (a bad setting or a port taken would otherwise restart forever).
    A run that lasted longer resets the count and the backoff: a crash after an hour of work is
    met with a fast restart, not with the backoff of the last incident.
    """

    backoff: float = 0.5
    max_backoff: float = 30.0
    quick: float = 10.0
    give_up: int = 5

    @classmethod
    def from_env(cls) -> Policy:
        return cls(
            backoff=_env_number("RECEPT_SUPERVISE_BACKOFF", cls.backoff),
            max_backoff=_env_number("RECEPT_SUPERVISE_MAX_BACKOFF", cls.max_backoff),
            quick=_env_number("RECEPT_SUPERVISE_QUICK", cls.quick),
            give_up=int(_env_number("RECEPT_SUPERVISE_GIVE_UP", cls.give_up)),
        )


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


@dataclass
class Child:
    label: str
    argv: list[str]
    env: Mapping[str, str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restarts: int = 0
    restart_at: float | None = None  # monotonic time of the next start, while waiting
    given_up: bool = False
    history: list[int] = field(default_factory=list)  # exit codes, newest last
    starts: list[float] = field(default_factory=list)  # monotonic start times

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    """Starts children, restarts the ones that exit, and stops them all on request."""

    def __init__(
        self,
        children: Sequence[tuple[str, Sequence[str], Mapping[str, str]]],
        *,
        policy: Policy | None = None,
        cwd: Path = ROOT,
        poll: float = 0.2,
        adopt_orphans: bool = False,
    ) -> None:
        self.children = [Child(label, list(argv), env) for label, argv, env in children]
        # The launcher's own process only: a subreaper receives every orphan below it.
        self.adopt_orphans = adopt_orphans
        self.policy = policy or Policy()
        self.cwd = cwd
        self.poll = poll
        self.stopping = False

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=dict(child.env), cwd=self.cwd)
        child.started_at = time.monotonic()
        child.starts.append(child.started_at)
        child.restart_at = None

    def start(self) -> None:
        if self.adopt_orphans:
            _become_subreaper()
        for child in self.children:
            self._start(child)

    def stop(self, *_args) -> None:
        self.stopping = True

    def check(self) -> None:
        """One supervision round: notice exits, schedule and perform restarts."""
        if self.adopt_orphans:
            _reap_orphans({c.proc.pid for c in self.children if c.proc is not None})
        now = time.monotonic()
        for child in self.children:
            if child.given_up or self.stopping:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    say(f"{child.label}: restarting (restart {child.restarts})")
                    self._start(child)
                continue
            if child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            child.history.append(code)
            ran = now - child.started_at
            if ran < self.policy.quick:
                child.quick_failures += 1
            else:
                child.quick_failures = 1  # this failure counts; the earlier, older ones do not
            if child.quick_failures >= self.policy.give_up:
                child.given_up = True
                say(
                    f"{child.label} exited with {describe_exit(code)} after {ran:.1f}s; giving up after "
                    f"{child.quick_failures} quick failures in a row (the other services keep running)"
                )
                continue
            delay = min(self.policy.max_backoff, self.policy.backoff * 2 ** (child.quick_failures - 1))
            child.restart_at = now + delay
            say(f"{child.label} exited with {describe_exit(code)} after {ran:.1f}s; restarting in {delay:.1f}s")

    @property
    def all_given_up(self) -> bool:
        return all(child.given_up for child in self.children)

    def run(self) -> int:
        """Supervise until stopped (or until every child was given up); the launcher's exit code."""
        try:
            while not self.stopping:
                self.check()
                if self.all_given_up:
                    say("every process was given up; stopping")
                    break
                time.sleep(self.poll)
        finally:
            self.terminate()
        return 1 if any(child.given_up for child in self.children) else 0

    def terminate(self, grace: float = 30.0) -> None:
        """SIGTERM every child; after ``grace`` seconds SIGKILL what is left, its own children first.

        gunicorn's master takes up to its graceful_timeout (10 s) to stop its workers; killed before
        that, it would leave them running with nobody to stop them.
        """
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"pid {proc.pid} did not stop within {grace:.0f}s; killing it and its children")
                for pid in _children_of(proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                proc.kill()
                proc.wait()
        # Grandchildren whose parent died first (a gunicorn worker SIGKILLed by its master on the way
        # out) were handed to this process: reap them, and kill any that still run.
        deadline = time.monotonic() + 5
        while self.adopt_orphans and (_reap_orphans(set()) or _children_of(os.getpid())):
            if time.monotonic() > deadline:
                for pid in _children_of(os.getpid()):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                deadline = time.monotonic() + 5
            time.sleep(0.05)


def _become_subreaper() -> None:
    """Orphaned grandchildren come to the launcher instead of to PID 1 (Linux; elsewhere a no-op).

    Where PID 1 does not reap (many containers), a grandchild that outlived its parent would
    otherwise stay a zombie; the launcher reaps them and, when it stops, kills what is left.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _reap_orphans(own: set[int]) -> bool:
    """Reap exited children that are not ours to supervise (Popen waits for those); True if one was."""
    reaped = False
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in own:
            return reaped
        try:
            os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            pass
        reaped = True


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in out]


def run_distributed(broker: str, host: str = "127.0.0.1", names=SERVICES) -> None:
    for name in names:
        spec = load(name)
        config = spec.config(env={**os.environ, "RECEPT_BROKER_URL": broker})
        check_database(name, config["DATABASE_URL"])
        spec.migrate(config)
    policy = Policy.from_env()
    children = [
        (f"{name} {role}", argv, child_env(name, broker, host, role))
        for name in names
        for role, argv in commands(name, host)
    ]
    supervisor = Supervisor(children, policy=policy, adopt_orphans=True)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    print(f"recept: distributed run against {redact(broker)}", flush=True)
    supervisor.start()
    for name in names:
        if load(name).has_worker and metrics_port_of(name):
            roles = f"api + worker, worker metrics on http://127.0.0.1:{metrics_port_of(name)}/metrics"
        elif load(name).has_worker:
            roles = "api + worker"
        else:
            roles = "api"
        print(f"recept:   {name:<7} http://{host}:{port_of(name)}/  ({roles})", flush=True)
    print(
        f"recept: a process that exits is restarted (gives up after {policy.give_up} quick failures); "
        "Ctrl-C stops everything",
        flush=True,
    )
    exit_code = supervisor.run()
    print("recept: stopped", flush=True)
    if exit_code:
        raise SystemExit(exit_code)
