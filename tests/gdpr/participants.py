"""Small participating services built only from the shared library, standing in for auth/orders/crm/audit.

Each keeps a few Vault-encrypted records in its own database, answers gdpr commands through
shared.privacy exactly as the real services do, and runs its real worker threads (relay,
consumer, announcer) against the test's RabbitMQ vhost.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import BigInteger, Column, LargeBinary, String, Table, delete, func, select, update

from shared.crypto import BlindIndex, Keyring
from shared.db import new_metadata
from shared.normalise import normalise_email
from shared.privacy import Category, Context, DataField, ErasureItem, Inventory, command_subscription
from shared.service import Runtime, ServiceSpec, Wiring, library_tables
from tests.support import TokenMint

RETAIN_UNTIL = date(2033, 12, 31)


@dataclass
class Fake:
    """One participating service: its spec, runtime and (when running) worker threads."""

    spec: ServiceSpec
    runtime: Runtime
    table: Table
    stop: threading.Event | None = None
    threads: list = field(default_factory=list)

    def start(self) -> None:
        self.stop = threading.Event()
        self.threads = self.runtime.start_worker_threads(self.stop)

    def halt(self) -> None:
        if self.stop is not None:
            self.stop.set()
            for thread in self.threads:
                thread.join(timeout=15)
            self.stop, self.threads = None, []

    def close(self) -> None:
        self.halt()
        self.runtime.db.dispose()

    def add_person(self, email: str, name: str) -> str:
        """A record about a person; returns its subject reference."""
        rt, row_id = self.runtime, str(uuid.uuid4())
        ref = f"{rt.name}:person:{row_id}"
        with rt.db.transaction() as s:
            s.execute(
                self.table.insert().values(
                    id=row_id,
                    subject=ref,
                    email_idx=BlindIndex(rt.keyring).email(email),
                    email=rt.vault.encrypt(s, ref, "people", "email", row_id, normalise_email(email)),
                    name=rt.vault.encrypt(s, ref, "people", "name", row_id, name),
                )
            )
        return ref

    def add_trail(self, reference: str, what: str) -> None:
        """An audit-like entry about another service's subject reference."""
        rt, row_id = self.runtime, str(uuid.uuid4())
        with rt.db.transaction() as s:
            s.execute(
                self.table.insert().values(
                    id=row_id,
                    subject=reference,
                    email_idx=0,
                    email=None,
                    name=rt.vault.encrypt(s, f"{rt.name}:entry:{row_id}", "people", "name", row_id, what),
                )
            )

    def people(self) -> list[dict]:
        rt = self.runtime
        with rt.db.transaction() as s:
            rows = s.execute(select(self.table)).all()
            return [
                {
                    "subject": r.subject,
                    "email": rt.vault.decrypt(s, "people", "email", r.id, r.email),
                    "name": rt.vault.decrypt(s, "people", "name", r.id, r.name),
                }
                for r in rows
            ]


class PeopleParticipant:
    """Resolves by e-mail; erases by deleting (``mode="delete"``) or anonymising and retaining."""

    def __init__(self, runtime: Runtime, table: Table, mode: str, phase: str) -> None:
        self.rt, self.table, self.mode, self.phase = runtime, table, mode, phase
        kind = "entry" if phase == "trail" else "person"
        self.kind = kind
        self.inventory = Inventory(
            service=runtime.name,
            categories=(
                Category(
                    kind=kind,
                    data_subjects="test subjects",
                    fields=(
                        DataField("email", "e-mail address", encrypted=True, blind_indexed=True),
                        DataField("name", "full name", encrypted=True),
                        DataField("diet", "diet (health data)", special=True, encrypted=True),
                    ),
                    purposes=("testing",),
                    legal_basis="contract (GDPR art. 6(1)(b))",
                    role="processor" if mode == "anonymise" else "controller",
                    controller="tenant (customer)" if mode == "anonymise" else "vendor",
                    retention="until erased",
                    recipients=("nobody",),
                    storage=f"{runtime.name} database, table people",
                    erasure="deleted" if mode == "delete" else "anonymised",
                ),
            ),
        )

    def counts(self, session) -> dict[str, int]:
        return {self.kind: session.scalar(select(func.count()).select_from(self.table))}

    def resolve(self, session, ctx: Context) -> list[str]:
        email = ctx.subject.get("email")
        if not email:
            return []
        wanted = normalise_email(email)
        rows = session.execute(
            select(self.table).where(self.table.c.email_idx == BlindIndex(self.rt.keyring).email(wanted))
        ).all()
        return [r.subject for r in rows if self.rt.vault.decrypt(session, "people", "email", r.id, r.email) == wanted]

    def export(self, session, ctx: Context, references: list[str]) -> dict[str, list[dict]]:
        rows = session.execute(select(self.table).where(self.table.c.subject.in_(references))).all()
        records = []
        for r in rows:
            records.append(
                {
                    "id": r.id,
                    "reference": r.subject,
                    "email": self.rt.vault.decrypt(session, "people", "email", r.id, r.email),
                    "name": self.rt.vault.decrypt(session, "people", "name", r.id, r.name),
                }
            )
        return {self.kind: records}

    def erase(self, session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        if self.phase == "trail":
            n = session.scalar(select(func.count()).select_from(self.table).where(self.table.c.subject.in_(references)))
            return [
                ErasureItem(
                    self.kind, "retained", n, legal_basis="accountability (GDPR art. 5(2))", retain_until=RETAIN_UNTIL
                )
            ]
        for ref in references:
            self.rt.vault.shred(session, ref)
        where = self.table.c.subject.in_(references)
        if self.mode == "delete":
            n = session.execute(delete(self.table).where(where)).rowcount
            return [ErasureItem(self.kind, "deleted", n)]
        n = session.execute(update(self.table).where(where).values(email=None, email_idx=0)).rowcount
        return [
            ErasureItem(self.kind, "anonymised", n),
            ErasureItem(
                "invoice", "retained", n, legal_basis="Bookkeeping Act (1999:1078) 7 ch. 2 §", retain_until=RETAIN_UNTIL
            ),
        ]


def make_fake(name: str, database_url: str, broker_url: str, *, mode: str = "delete", phase: str = "resolve") -> Fake:
    metadata = new_metadata()
    tables = library_tables(metadata)
    people = Table(
        "people",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("subject", String(200), nullable=False),
        Column("email_idx", BigInteger, nullable=False),
        Column("email", LargeBinary, nullable=True),
        Column("name", LargeBinary, nullable=True),
    )
    holder: dict = {}

    def build(rt: Runtime) -> Wiring:
        participant = holder["participant"]
        return Wiring(domain=participant, participant=participant, subscriptions=[command_subscription(rt)])

    spec = ServiceSpec(name=name, metadata=metadata, tables=tables, migrations=Path("unused"), bootstrap=build)
    config = spec.config(
        overrides={
            "DATABASE_URL": database_url,
            "BROKER_URL": broker_url,
            "keyring": Keyring.generate(),
            "keyset": TokenMint().keyset(),
            "ANNOUNCE_INTERVAL": 1.0,
            "RELAY_INTERVAL": 0.05,
            "DELIVERY_LIMIT": 3,
        },
        env={},
    )
    runtime = Runtime(spec, config)
    metadata.create_all(runtime.db.engine)
    holder["participant"] = PeopleParticipant(runtime, people, mode, phase)
    return Fake(spec, runtime, people)
