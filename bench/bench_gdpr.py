"""Data-subject export and erasure latency end to end over the distributed system, at two data sizes."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta

from bench.common import Client, JwksServer, System, percentile, plain_url, wait_until
from bench.runner import Context, Figure, benchmark

TENANT = "bench"
ORDERS_PER_INDIVIDUAL = 10  # 100,000 individuals -> 1,000,000 orders
CALLS_PER_INDIVIDUAL = 1  # 100,000 individuals -> 100,000 call-log rows
FINISHED = ("completed", "partially_completed", "failed", "rejected")


def personnummer(i: int) -> str:
    """A valid, unique 12-digit personnummer for person ``i`` (Luhn over the 10-digit form)."""
    born = date(1940, 1, 1) + timedelta(days=i // 900)
    serial = f"{100 + i % 900:03d}"
    digits = born.strftime("%y%m%d") + serial
    total = sum(sum(divmod(int(d) * (2 - k % 2), 10)) for k, d in enumerate(digits))
    return born.strftime("%Y%m%d") + serial + str((10 - total % 10) % 10)


def phone(i: int) -> str:
    return f"+4670{i:07d}"


class Loader:
    """Bulk loads individuals and their orders (orders) and call-log rows (crm), Vault-encrypted per subject."""

    def __init__(self, system: System) -> None:
        from services.crm.models import tables as crm_tables
        from services.orders.models import tables as orders_tables
        from shared.crypto import BlindIndex, Vault, index_bits
        from shared.db import Database

        self.system = system
        self.orders_db = Database(system.urls["orders"])
        self.crm_db = Database(system.urls["crm"])
        self.orders_vault = Vault(system.keyring, orders_tables.data_keys)
        self.crm_vault = Vault(system.keyring, crm_tables.data_keys)
        # the width the services write with: sized from their PLANNED_SUBJECTS (docs/crypto.md "Sizing")
        from services.orders import SPEC as ORDERS

        self.index = BlindIndex(system.keyring, bits=index_bits(ORDERS.config()["PLANNED_SUBJECTS"]))
        self.now = datetime.now(UTC)
        self.ids = {k: str(uuid.uuid4()) for k in ("unit", "register", "list", "article", "import")}
        self._static()
        self._tenant()

    def _tenant(self) -> None:
        """The tenant as auth would announce it, with its agreement (the smoke run has no auth; issue 15)."""
        from services.gdpr.tenants import TenantReplica
        from shared.db import Database

        gdpr_db = Database(self.system.urls["gdpr"])
        try:
            with gdpr_db.transaction() as s:
                TenantReplica().on_event(
                    s,
                    {
                        "type": "auth.tenant.announced",
                        "tenant": TENANT,
                        "data": {
                            "tenant_id": str(uuid.uuid4()),
                            "kind": "customer",
                            "agreement": {"version": "bench", "signed_on": "2025-01-01"},
                        },
                    },
                )
        finally:
            gdpr_db.dispose()

    def close(self) -> None:
        self.orders_db.dispose()
        self.crm_db.dispose()

    def _static(self) -> None:
        from services.crm.models import call_imports
        from services.orders.models import articles, assortment_lists, registers, units

        ids, now = self.ids, self.now
        with self.orders_db.transaction() as s:
            s.execute(
                units.insert().values(
                    id=ids["unit"], tenant=TENANT, name="Ward 7", kind="hospital_ward", created_at=now
                )
            )
            s.execute(
                registers.insert().values(
                    id=ids["register"],
                    tenant=TENANT,
                    name="Ward 7",
                    deadline_minutes=720,
                    deadline_days_before=1,
                    timezone="Europe/Stockholm",
                    created_at=now,
                    updated_at=now,
                )
            )
            s.execute(
                assortment_lists.insert().values(
                    id=ids["list"], tenant=TENANT, name="Food", unit_id=None, created_at=now
                )
            )
            s.execute(
                articles.insert().values(
                    id=ids["article"],
                    tenant=TENANT,
                    list_id=ids["list"],
                    code="L1",
                    name="Lunch",
                    kind="meal",
                    active=True,
                    created_at=now,
                )
            )
        with self.crm_db.transaction() as s:
            s.execute(
                call_imports.insert().values(
                    id=ids["import"],
                    source="cli",
                    imported_by="bench",
                    rows=0,
                    imported=0,
                    duplicates=0,
                    rejected=0,
                    matched=0,
                    created_at=now,
                )
            )

    def load(self, first: int, last: int) -> None:
        for start in range(first, last, 5_000):
            self._chunk(start, min(last, start + 5_000))

    def _chunk(self, first: int, last: int) -> None:
        import psycopg

        from services.crm.models import calls
        from services.orders.models import individuals

        now, ids = self.now, self.ids
        people = [(i, str(uuid.uuid4())) for i in range(first, last)]
        with self.orders_db.transaction() as s:
            self.orders_vault.prepare(s, [f"orders:individual:{pid}" for _i, pid in people])
            rows = []
            for i, pid in people:
                subject, name, pnr = f"orders:individual:{pid}", f"Person {i}", personnummer(i)
                seal = lambda column, value, pid=pid, subject=subject: self.orders_vault.encrypt(  # noqa: E731
                    s, subject, "individuals", column, pid, value
                )
                rows.append(
                    {
                        "id": pid,
                        "tenant": TENANT,
                        "register_id": ids["register"],
                        "unit_id": ids["unit"],
                        "status": "active",
                        "valid_from": None,
                        "valid_to": None,
                        "name": seal("name", name),
                        "name_idx": self.index.name(name),
                        "personnummer": seal("personnummer", pnr),
                        "personnummer_idx": self.index.of("personnummer", pnr),
                        "date_of_birth": None,
                        "room": seal("room", "12"),
                        "bed": None,
                        "diets": None,
                        "allergies": None,
                        "texture_level": None,
                        "notes": None,
                        "created_at": now,
                        "updated_at": now,
                        "erased_at": None,
                    }
                )
            s.execute(individuals.insert(), rows)
        with psycopg.connect(plain_url(self.system.urls["orders"])) as conn:
            with conn.cursor().copy(
                "COPY orders (id, tenant, register_id, unit_id, individual_id, article_id, "
                "delivery_date, meal, quantity, status, placed_at, placed_by, updated_at, "
                "deidentified) FROM STDIN"
            ) as copy:
                for i, pid in people:
                    for k in range(ORDERS_PER_INDIVIDUAL):
                        copy.write_row(
                            (
                                str(uuid.uuid4()),
                                TENANT,
                                ids["register"],
                                ids["unit"],
                                pid,
                                ids["article"],
                                date.today() - timedelta(days=1 + (i + k) % 300),
                                "lunch",
                                1,
                                "placed",
                                now,
                                "bench",
                                now,
                                False,
                            )
                        )
        with self.crm_db.transaction() as s:
            call_rows = []
            for i, _pid in people:
                for k in range(CALLS_PER_INDIVIDUAL):
                    call_id = str(uuid.uuid4())
                    subject = f"crm:call:{call_id}"
                    call_rows.append((call_id, subject, i, k))
            self.crm_vault.prepare(s, [row[1] for row in call_rows])
            s.execute(
                calls.insert(),
                [
                    {
                        "id": call_id,
                        "import_id": ids["import"],
                        "subject_ref": subject,
                        "number": self.crm_vault.encrypt(s, subject, "calls", "number", call_id, phone(i)),
                        "number_idx": self.index.of("phone", phone(i)),
                        "called_line": "+4686000000",
                        "started_at": now - timedelta(hours=i % 5000),
                        "duration_s": 60 + k,
                        "direction": "in",
                        "person_id": None,
                        "company_id": None,
                        "fingerprint": uuid.uuid4().hex + uuid.uuid4().hex,
                        "created_at": now,
                    }
                    for call_id, subject, i, k in call_rows
                ],
            )


class Officers:
    """The tenant's privacy officer, who opens (orders holds the tenant's processor data, so the request is the
    controller's own instruction, issue 15), and a vendor compliance officer who approves, talking to the gdpr api."""

    def __init__(self, system: System, mint) -> None:
        port = system.ports["gdpr"]
        self.first = Client(port, mint.token(tenant=TENANT, roles=("privacy_officer",), ttl=7200))
        self.second = Client(port, mint.token(tenant="vendor", roles=("compliance_officer",), ttl=7200))

    def reconnect(self) -> None:
        self.first.reconnect()
        self.second.reconnect()

    def close(self) -> None:
        self.first.close()
        self.second.close()

    def run(self, kind: str, i: int) -> tuple[float, dict]:
        """One request for person ``i``: latency in ms from approved (both kinds need a second officer
        by default, issue 14, once the preview is complete, issue 15) to finished."""
        body = {"type": kind, "tenant": TENANT, "subject": {"personnummer": personnummer(i), "phone": phone(i)}}
        status, created = self.first.post("/api/v1/requests", body)
        if status != 202:
            raise RuntimeError(f"opening a request answered {status}")
        started = time.perf_counter()
        view = created
        while view.get("status") == "previewing":  # issue 15: every request is previewed first
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"a {kind} request's preview did not finish in 120 s")
            time.sleep(0.01)
            status, view = self.first.get(f"/api/v1/requests/{created['id']}")
        if view.get("status") == "awaiting_approval" and "preview" not in view:
            # The opening answer is the request's summary: its preview is in the whole document.
            status, view = self.first.get(f"/api/v1/requests/{created['id']}")
        if view.get("status") == "awaiting_approval":
            # The second officer confirms the preview's exact matches (the person, found by personnummer).
            preview = view["preview"]
            confirmed = [
                c["id"] for entry in preview["services"].values() for c in entry["candidates"] if c["match"] == "exact"
            ]
            decision = {"preview_hash": preview["hash"], "confirmed": confirmed}
            status, _ = self.second.post(f"/api/v1/requests/{created['id']}/approve", decision)
            if status != 200:
                raise RuntimeError(f"approving a request answered {status}")
            started = time.perf_counter()
        while True:
            status, view = self.first.get(f"/api/v1/requests/{created['id']}")
            if view.get("status") in FINISHED:
                return (time.perf_counter() - started) * 1000, view
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"a {kind} request did not finish in 120 s")
            time.sleep(0.01)


def _measure(officers: Officers, kind: str, people: list[int]) -> list[float]:
    latencies = []
    for i in people:
        ms, view = officers.run(kind, i)
        if view["status"] != "completed":
            raise RuntimeError(f"a {kind} request ended {view['status']}")
        # The person must really have been found (an identifier that matches nobody also completes, faster).
        found = {entry["service"]: entry["references"] for entry in view["services"]}
        if found.get("orders", 0) < 1 or found.get("crm", 0) < 1:
            raise RuntimeError(f"a {kind} request did not find the person: {found}")
        latencies.append(ms)
    return latencies


@benchmark(
    "gdpr_requests",
    "data-subject export and erasure, request accepted → completed, over the "
    "distributed system (auth, orders, crm, audit, gdpr)",
)
def gdpr_requests(ctx: Context) -> list[Figure]:
    from tests.support import TokenMint

    small, large = ctx.size(10_000, 20), ctx.size(100_000, 200)
    samples = ctx.size(30, 3)
    mint = TokenMint()
    jwks = JwksServer(mint)
    ctx.cleanup.append(jwks.close)
    # The smoke run leaves out auth and audit (start-up time); the full run has every participant.
    services = ("orders", "crm", "gdpr") if ctx.smoke else ("auth", "orders", "crm", "audit", "gdpr")
    system = System(ctx, services, RECEPT_JWKS_URL=jwks.url).start()
    loader = Loader(system)
    officers = Officers(system, mint)
    results: dict[tuple[str, int], list[float]] = {}
    try:
        loader.load(0, small)
        officers.reconnect()

        def everyone_answers() -> bool:
            # Every participant announces itself at start-up; wait until a request reaches them all.
            _ms, view = officers.run("export", small - 1)
            return view["status"] == "completed" and len(view["services"]) == len(services) - 1

        if not wait_until(everyone_answers, 120, 1.0):
            raise RuntimeError("the gdpr service never saw every participant")
        for size, load_to in ((small, small), (large, large)):
            if load_to > small:
                loader.load(small, large)
                officers.reconnect()
            # Different people for each sample, spread over the whole set; erased people are not asked again.
            step = size // (2 * samples + 1)
            people = [step * (k + 1) for k in range(2 * samples)]
            results[("export", size)] = _measure(officers, "export", people[:samples])
            results[("erase", size)] = _measure(officers, "erase", people[samples:])
    finally:
        officers.close()
        loader.close()
    figures = []
    for kind in ("export", "erase"):
        for size in (small, large):
            values = results[(kind, size)]
            figures.append(
                Figure(
                    f"{kind} p50, {size:,} individuals",
                    percentile(values, 50),
                    "ms",
                    500.0,
                    "goal 500 ms",
                    "p50 < 500 ms",
                    1.0,
                    higher_is_better=False,
                )
            )
            figures.append(
                Figure(f"{kind} p95, {size:,} individuals", percentile(values, 95), "ms", higher_is_better=False)
            )
        figures.append(
            Figure(
                f"{kind} p50 growth for 10× the data",
                percentile(results[(kind, large)], 50),
                "ms",
                percentile(results[(kind, small)], 50),
                f"p50 at {small:,} individuals",
                "<= 1.5× the small set",
                1.5,
                higher_is_better=False,
            )
        )
    return figures
