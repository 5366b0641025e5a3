"""Catch-up after a broker outage (issue 20): the backlog written while the broker was away, against
a backlog of the same size written while it is up, in the same run."""

from __future__ import annotations

from bench.runner import Context, Figure, benchmark


@benchmark("catch_up", "catch-up after a broker outage vs steady ingest (outbox → relay → RabbitMQ → consumer)")
def catch_up(ctx: Context) -> list[Figure]:
    from tests.shared.library_service import LibraryService, measure_catch_up
    from tests.support import BrokerProxy

    count = ctx.size(5_000, 300)
    outage = 20.0 if not ctx.smoke else 2.0
    vhost = ctx.vhost()
    host, port = ctx.rabbit.rsplit("@", 1)[1].split(":")
    proxy = BrokerProxy(host, int(port))  # the broker "goes away" behind it
    service = LibraryService(ctx.postgres(), proxy.url(vhost), name="bench", batch=True)
    try:
        figures = measure_catch_up(service, proxy, count, outage)
    finally:
        proxy.stop()
        service.db.dispose()
    steady = "backlog written while the broker is up (write → every event applied)"
    return [
        Figure(
            f"catch-up: {count:,} events written during a {outage:.0f} s outage (broker back → all applied)",
            figures.catch_up,
            "events/s",
            figures.steady,
            steady,
            ">= 0.75 of baseline",
            0.75,
        ),
        Figure(
            "catch-up drain (first event applied after the return → every event applied)",
            figures.drain,
            "events/s",
            figures.steady,
            steady,
        ),
        Figure(
            "broker back → first event of the backlog applied",
            figures.reconnect_delay * 1000,
            "ms",
            higher_is_better=False,
        ),
    ]
