"""Runs benchmarks, prints figures with their in-run baselines, writes results and the docs table.

    ./recept bench            every benchmark at full size
    ./recept bench NAME ...   only these
    ./recept bench --smoke    tiny sizes (what the test suite runs so benchmarks never rot)

A benchmark is a function ``run(ctx) -> list[Figure]`` registered with ``@benchmark``;
``ctx`` gives it sizes (full or smoke), a scratch PostgreSQL database and RabbitMQ vhost.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOC = ROOT / "docs" / "benchmarks.md"
MODULES = (
    "bench.bench_messaging",
    "bench.bench_catch_up",
    "bench.bench_audit",
    "bench.bench_orders",
    "bench.bench_auth",
    "bench.bench_gdpr",
)
REGISTRY: dict[str, tuple[str, Callable]] = {}


@dataclass
class Figure:
    name: str  # what was measured
    value: float
    unit: str  # "events/s", "ms", "MiB"
    baseline: float | None = None  # the same-run baseline, when there is one
    baseline_name: str = ""
    goal: str = ""  # e.g. ">= 0.50 of baseline"
    goal_ratio: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    @property
    def meets_goal(self) -> bool | None:
        if self.goal_ratio is None or self.ratio is None:
            return None
        return self.ratio >= self.goal_ratio if self.higher_is_better else self.ratio <= self.goal_ratio


@dataclass
class Context:
    smoke: bool
    pg_host: str = os.environ.get("RECEPT_BENCH_PG_HOST", "127.0.0.1")
    pg_user: str = os.environ.get("RECEPT_BENCH_PG_USER", "postgres")
    rabbit: str = os.environ.get("RECEPT_BENCH_RABBIT", "guest:guest@127.0.0.1:5672")
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def postgres(self, prefix: str = "recept_bench") -> str:
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(host=self.pg_host, user=self.pg_user, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')

        def drop():
            with psycopg.connect(host=self.pg_host, user=self.pg_user, dbname="postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self.cleanup.append(drop)
        return f"postgresql+psycopg://{self.pg_user}@{self.pg_host}/{name}"

    def vhost(self) -> str:
        name = f"recept-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
        user = self.rabbit.split(":", 1)[0]
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, user, ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        self.cleanup.append(lambda: subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True))
        return f"amqp://{self.rabbit}/{quote(name, safe='')}"

    def tempdir(self) -> str:
        """A scratch directory removed after the benchmark."""
        import shutil
        import tempfile

        path = tempfile.mkdtemp(prefix="recept-bench-")
        self.cleanup.append(lambda: shutil.rmtree(path, ignore_errors=True))
        return path

    def close(self) -> None:
        while self.cleanup:
            try:
                self.cleanup.pop()()
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                print(f"bench: cleanup failed: {type(exc).__name__}", file=sys.stderr)


def benchmark(name: str, title: str):
    def register(fn: Callable[[Context], list[Figure]]):
        REGISTRY[name] = (title, fn)
        return fn

    return register


def load_all() -> None:
    for module in MODULES:
        importlib.import_module(module)


def machine() -> dict:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def run(names: list[str] | None = None, smoke: bool = False, write: bool = True) -> dict:
    load_all()
    names = names or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    cores = os.cpu_count()
    results = {
        "machine": machine(),
        "smoke": smoke,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "benchmarks": {},
    }
    for name in names:
        title, fn = REGISTRY[name]
        ctx = Context(smoke=smoke)
        print(f"== {name}: {title} ({cores} cores{', smoke sizes' if smoke else ''})", flush=True)
        try:
            figures = fn(ctx)
        except Exception:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            traceback.print_exc()
            print(f"   {name} FAILED; its figures are not recorded", file=sys.stderr, flush=True)
            results.setdefault("failed", []).append(name)
            continue
        finally:
            ctx.close()
        for f in figures:
            line = f"   {f.name}: {f.value:,.1f} {f.unit}"
            if f.ratio is not None:
                line += f"  | baseline {f.baseline_name}: {f.baseline:,.1f} {f.unit}  | ratio {f.ratio:.2f}"
            if f.goal:
                verdict = {True: "meets", False: "misses", None: ""}[f.meets_goal]
                line += f"  | goal {f.goal} {verdict}".rstrip()
            print(line + f"  [{cores} cores]", flush=True)
        results["benchmarks"][name] = {
            "title": title,
            "figures": [{**asdict(f), "ratio": f.ratio, "meets_goal": f.meets_goal} for f in figures],
        }
    if write:
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        # A failed benchmark keeps its previous full figures rather than vanishing from the table.
        if previous.get("smoke") is False and not smoke:
            merged = {**previous.get("benchmarks", {}), **results["benchmarks"]}
            results["benchmarks"] = merged
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        if not smoke:
            write_doc(results)
    return results


def write_doc(results: dict) -> None:
    lines = [
        "<!-- generated by ./recept bench; edit bench/runner.py, not this table -->",
        "",
        f"Last full run: {results['time']} on {results['machine']['cores']} cores, "
        f"Python {results['machine']['python']}.",
        "",
        "| benchmark | figure | value | baseline | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in results["benchmarks"].items():
        for f in entry["figures"]:
            base = f"{f['baseline']:,.1f} {f['unit']} ({f['baseline_name']})" if f["baseline"] is not None else ""
            ratio = f"{f['ratio']:.2f}" if f["ratio"] is not None else ""
            goal = (
                f"{f['goal']} — {'met' if f['meets_goal'] else 'missed'}"
                if f["goal"] and f["meets_goal"] is not None
                else f["goal"]
            )
            lines.append(f"| {name} | {f['name']} | {f['value']:,.1f} {f['unit']} | {base} | {ratio} | {goal} |")
    table = "\n".join(lines) + "\n"
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + table + text[text.index(end) :]
    else:
        text = (text or "# Benchmarks\n") + f"\n{start}\n{table}{end}\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./recept bench")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; results are not written to the docs")
    args = parser.parse_args(argv)
    results = run(args.names, smoke=args.smoke)
    return 1 if results.get("failed") else 0
