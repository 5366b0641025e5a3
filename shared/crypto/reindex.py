"""Recomputing blind-index columns (R7): after ``PLANNED_SUBJECTS`` changes the index width,
and to move rows to a new primary index key (docs/crypto.md "Re-indexing").

Each row's encrypted source column is decrypted, normalised the way the service normalised it
when it wrote the row, and its index column set to :meth:`BlindIndex.of` (the primary index
key, the configured bits).  Rows go in id order, ``batch`` per query; run it again after an
interruption: it only rewrites values that differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, select, update

from .blind_index import BlindIndex
from .vault import ERASED, Vault

__all__ = ["IndexedColumn", "reindex_table"]


def _same(value: str) -> str:
    return value


@dataclass(frozen=True)
class IndexedColumn:
    """``index`` holds ``BlindIndex.of(kind, normalise(plaintext of source))``."""

    index: str  # the BIGINT blind-index column
    source: str  # the encrypted column it indexes
    kind: str  # the BlindIndex kind ("email", "phone", "name", …)
    normalise: Callable[[str], str] = _same  # what the writer applied before indexing (stored values
    # that are already normal forms need nothing)


def reindex_table(
    session: Any, vault: Vault, index: BlindIndex, table: Table, columns: Sequence[IndexedColumn], batch: int = 500
) -> int:
    """Recompute ``columns`` of every row of ``table``; returns how many rows changed.

    A source that is NULL or erased (shredded) gets a NULL index where the column allows it
    (nothing can be recomputed from an erased value); otherwise the stored value is left.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    pk = table.c.id
    wanted = [pk, *{table.c[c.source] for c in columns}, *{table.c[c.index] for c in columns}]
    stmt = update(table).where(pk == bindparam("b_id")).values({c.index: bindparam(f"b_{c.index}") for c in columns})
    changed, last = 0, None
    while True:
        query = select(*wanted).order_by(pk).limit(batch)
        if last is not None:
            query = query.where(pk > last)
        rows = session.execute(query).all()
        if not rows:
            return changed
        vault.prefetch(session, [row._mapping[c.source] for row in rows for c in columns])
        params = []
        for row in rows:
            values = row._mapping
            new = {}
            for c in columns:
                plain = vault.decrypt(session, table.name, c.source, values["id"], values[c.source])
                if isinstance(plain, bytes):
                    plain = plain.decode("utf-8")
                if plain is None or plain is ERASED:
                    new[c.index] = None if table.c[c.index].nullable else values[c.index]
                else:
                    assert isinstance(plain, str)
                    new[c.index] = index.of(c.kind, c.normalise(plain))
            if any(new[c.index] != values[c.index] for c in columns):
                params.append({"b_id": values["id"], **{f"b_{name}": value for name, value in new.items()}})
        if params:
            session.execute(stmt, params)
            changed += len(params)
        last = rows[-1]._mapping["id"]
