"""Order placement over HTTP under gunicorn on PostgreSQL, against a plaintext insert on the same server."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

from bench.common import Client, JwksServer, free_port, percentile, wait_until
from bench.runner import ROOT, Context, Figure, benchmark

CLIENTS = 8


def load(port: int, token: str | None, path: str, body: dict, total: int) -> tuple[float, list[float]]:
    """``total`` POSTs spread over CLIENTS keep-alive connections; (requests/s, latencies in ms)."""
    latencies: list[float] = []
    failures: list[int] = []
    per_client = [total // CLIENTS + (1 if i < total % CLIENTS else 0) for i in range(CLIENTS)]

    def run(n: int) -> None:
        client = Client(port, token)
        try:
            for _ in range(n):
                started = time.perf_counter()
                status, _ = client.post(path, body)
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 201:
                    failures.append(status)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in per_client]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests to {path} failed (first status {failures[0]})")
    return total / elapsed, latencies


@benchmark(
    "order_placement", "POST /api/v1/orders under gunicorn (2 workers) on PostgreSQL: token, access check, outbox"
)
def order_placement(ctx: Context) -> list[Figure]:
    import uuid

    from bench.orders_baseline import plain_orders
    from services.orders import SPEC
    from shared.crypto import Keyring
    from shared.db import Database
    from tests.support import TokenMint

    total = ctx.size(4_000, 40)
    db_url = ctx.postgres()
    keyring = Path(ctx.tempdir()) / "keyring.json"
    keyring.write_text(Keyring.generate().to_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEPT_")}
    mint = TokenMint()
    jwks = JwksServer(mint)
    ctx.cleanup.append(jwks.close)
    env.update(
        RECEPT_SERVICE="orders",
        RECEPT_ORDERS_DATABASE_URL=db_url,
        RECEPT_BROKER_URL=ctx.vhost(),
        RECEPT_KEYRING_FILE=str(keyring),
        RECEPT_JWKS_URL=jwks.url,
        GUNICORN_WORKERS="2",
        PYTHONUNBUFFERED="1",
    )
    SPEC.migrate(SPEC.config(env=env))
    db = Database(db_url)
    plain_orders.create(db.engine)
    db.dispose()

    port = free_port()
    log = open(Path(ctx.tempdir()) / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "-c",
            str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "bench.orders_baseline:create_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def stop() -> None:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

    ctx.cleanup.append(stop)

    def up() -> bool:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            c.request("GET", "/healthz")
            return c.getresponse().status == 200
        except OSError:  # not up yet, or too slow to answer on a loaded machine
            return False
        finally:
            c.close()  # also on a time-out: an unclosed socket is a ResourceWarning (an error in tests)

    if not wait_until(up, 60, 0.2):
        raise RuntimeError("gunicorn did not start; see its log in the bench temp dir")

    tenant, user = "bench", str(uuid.uuid4())
    admin = Client(port, mint.token(tenant=tenant, roles=("tenant_admin",), ttl=3600))
    try:

        def made(path: str, body: dict) -> str:
            status, out = admin.post(path, body)
            if status not in (200, 201):
                raise RuntimeError(f"setting up {path} answered {status}")
            return out["id"]

        unit = made("/api/v1/units", {"name": "Ward 7", "kind": "hospital_ward"})
        register = made("/api/v1/registers", {"name": "Ward 7 orders", "deadline": {"time": "12:00", "days_before": 1}})
        lst = made("/api/v1/assortment-lists", {"name": "Hospital food"})
        article = made(f"/api/v1/assortment-lists/{lst}/articles", {"code": "L1", "name": "Lunch", "kind": "meal"})
        for path in (f"/api/v1/registers/{register}/grants", f"/api/v1/assortment-lists/{lst}/grants"):
            made(path, {"principal": {"type": "user", "id": user}, "right": "order"})
        individual = made(f"/api/v1/registers/{register}/individuals", {"name": "Bench Person", "unit_id": unit})
    finally:
        admin.close()

    order = {
        "register_id": register,
        "individual_id": individual,
        "unit_id": unit,
        "article_id": article,
        "delivery_date": (date.today() + timedelta(days=30)).isoformat(),
        "meal": "lunch",
        "quantity": 1,
    }
    token = mint.token(sub=user, tenant=tenant, roles=("staff",), ttl=3600)
    warm = ctx.size(200, 8)
    load(port, token, "/api/v1/orders", order, warm)
    load(port, None, "/bench/plain-order", {**order, "tenant": tenant}, warm)
    rate, latencies = load(port, token, "/api/v1/orders", order, total)
    base_rate, base_latencies = load(port, None, "/bench/plain-order", {**order, "tenant": tenant}, total)
    return [
        Figure(
            f"orders placed ({CLIENTS} keep-alive clients)",
            rate,
            "orders/s",
            base_rate,
            "plaintext insert of the same row, no token/check/event, same server",
            ">= 0.75 of baseline",
            0.75,
        ),
        Figure(
            "order placement latency p50",
            percentile(latencies, 50),
            "ms",
            percentile(base_latencies, 50),
            "baseline p50",
            higher_is_better=False,
        ),
        Figure(
            "order placement latency p99",
            percentile(latencies, 99),
            "ms",
            percentile(base_latencies, 99),
            "baseline p99",
            higher_is_better=False,
        ),
    ]
