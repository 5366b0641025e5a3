"""Server-side sign-in sessions: the auth service's tokens stay here, never in the browser.

The browser's signed cookie holds only a random session id.  This module keeps, per
session, the access and refresh tokens (Vault ciphertexts), enforces an idle timeout and
an absolute lifetime, swaps in refreshed tokens, and on sign-out or expiry crypto-shreds
the tokens and deletes the row.  No Flask here: the web layer calls it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from shared.clock import as_utc, utcnow
from shared.crypto import ERASED, Vault

from .models import sessions as table

TABLE = "portal_sessions"


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def _subject(key_ref: str) -> str:
    return f"portal:session:{key_ref}"


@dataclass(frozen=True)
class Tokens:
    """What the auth service's login or refresh answered."""

    access_token: str
    refresh_token: str | None
    expires_in: int


@dataclass(frozen=True)
class PortalSession:
    sid: str
    user_id: str
    tenant: str | None
    roles: frozenset[str]
    username: str
    access_token: str
    refresh_token: str | None
    access_expires_at: datetime

    def has_any_role(self, roles: Iterable[str]) -> bool:
        return bool(self.roles.intersection(roles))


class SessionStore:
    """Sessions in the portal's own database."""

    def __init__(
        self, db, vault: Vault, *, idle: timedelta, lifetime: timedelta, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.vault = vault
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock

    def create(self, tokens: Tokens, *, user_id: str, tenant: str | None, roles: Iterable[str], username: str) -> str:
        """Open a session; returns the new random session id for the cookie."""
        sid = secrets.token_urlsafe(32)
        key, key_ref, now = _key(sid), str(uuid.uuid4()), self.clock()
        subject = _subject(key_ref)
        with self.db.transaction() as s:
            s.execute(
                table.insert().values(
                    id=key,
                    key_ref=key_ref,
                    user_id=user_id,
                    tenant=tenant,
                    roles=sorted(set(roles)),
                    username=self.vault.encrypt(s, subject, TABLE, "username", key, username),
                    access_token=self.vault.encrypt(s, subject, TABLE, "access_token", key, tokens.access_token),
                    refresh_token=self.vault.encrypt(s, subject, TABLE, "refresh_token", key, tokens.refresh_token),
                    access_expires_at=now + timedelta(seconds=tokens.expires_in),
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self.lifetime,
                )
            )
        return sid

    def load(self, sid: str | None) -> tuple[PortalSession | None, bool]:
        """(the live session, False), or (None, True) when it existed but has expired (and is now gone).

        Loading counts as activity: it moves the idle deadline.
        """
        if not sid or not isinstance(sid, str):
            return None, False
        key, now = _key(sid), self.clock()
        with self.db.transaction() as s:
            row = s.execute(select(table).where(table.c.id == key)).first()
            if row is None:
                return None, False
            if as_utc(row.expires_at) <= now or as_utc(row.last_seen_at) + self.idle <= now:
                self._drop(s, row)
                return None, True
            values = {
                c: self.vault.decrypt(s, TABLE, c, key, getattr(row, c))
                for c in ("username", "access_token", "refresh_token")
            }
            if values["access_token"] in (None, ERASED):
                self._drop(s, row)
                return None, True
            s.execute(update(table).where(table.c.id == key).values(last_seen_at=now))
        return PortalSession(
            sid=sid,
            user_id=row.user_id,
            tenant=row.tenant,
            roles=frozenset(row.roles or ()),
            username=values["username"] if isinstance(values["username"], str) else "",
            access_token=values["access_token"],
            refresh_token=values["refresh_token"] if isinstance(values["refresh_token"], str) else None,
            access_expires_at=as_utc(row.access_expires_at),
        ), False

    def replace_tokens(self, sid: str, tokens: Tokens, *, roles: Iterable[str] | None = None) -> None:
        """After a refresh: the new pair replaces the old one (refresh tokens rotate)."""
        key, now = _key(sid), self.clock()
        with self.db.transaction() as s:
            row = s.execute(select(table.c.key_ref).where(table.c.id == key)).first()
            if row is None:
                return
            subject = _subject(row.key_ref)
            values = {
                "access_token": self.vault.encrypt(s, subject, TABLE, "access_token", key, tokens.access_token),
                "access_expires_at": now + timedelta(seconds=tokens.expires_in),
            }
            if tokens.refresh_token:
                values["refresh_token"] = self.vault.encrypt(
                    s, subject, TABLE, "refresh_token", key, tokens.refresh_token
                )
            if roles is not None:
                values["roles"] = sorted(set(roles))
            s.execute(update(table).where(table.c.id == key).values(**values))

    def end(self, sid: str | None) -> bool:
        """Sign-out: shred the session's tokens and delete it.  True when there was one."""
        if not sid:
            return False
        with self.db.transaction() as s:
            row = s.execute(select(table.c.id, table.c.key_ref).where(table.c.id == _key(sid))).first()
            if row is None:
                return False
            self._drop(s, row)
        return True

    def purge(self) -> int:
        """Drop every expired session (run at each sign-in and by ``./recept portal purge-sessions``)."""
        now = self.clock()
        with self.db.transaction() as s:
            rows = s.execute(
                select(table.c.id, table.c.key_ref).where(
                    (table.c.expires_at <= now) | (table.c.last_seen_at <= now - self.idle)
                )
            ).all()
            for row in rows:
                self._drop(s, row)
        return len(rows)

    def count(self) -> int:
        with self.db.transaction() as s:
            return len(s.execute(select(table.c.id)).all())

    def _drop(self, s, row) -> None:
        self.vault.shred(s, _subject(row.key_ref))
        s.execute(delete(table).where(table.c.id == row.id))
