"""Logins, access and refresh tokens, logout, and brute-force protection.

A login runs in three steps so no database transaction is held open while a password is
hashed or the directory answers: read (tenant, user, locks), verify (Argon2id, or a bind on
the directory), write (outcome, counters, tokens, events).  Every kind of failure gives the
caller the same ``Unauthorized``; only the login history and the ``auth.login.failed`` event
say why.  A directory that cannot be reached is ``Unavailable`` (503), never a failed login.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339
from shared.errors import AccessDenied, Conflict, Invalid, NotFound, Unauthorized, Unavailable
from shared.normalise import normalise_email
from shared.tokens import TENANT_ROLES, VENDOR_ROLES, Principal

from . import events
from .config import forwarding_token
from .directory import DirectoryClient, DirectoryRejected, DirectoryUnavailable
from .domain import Auth, normalise_username, user_subject
from .models import client_failures, login_history, refresh_tokens, revoked_tokens, tenants, users

_UNREAD = object()
LOGIN_FAILED = "the login failed: check the tenant, username and password, or try again later"
REFRESH_FAILED = "the refresh token is not valid; log in again"
DIRECTORY_DOWN = "the user directory cannot be reached right now; try again later"
JIT_ACTOR_ID = "directory-login"


def token_hash(token: str) -> str:
    """Refresh tokens are 256 random bits, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """What the read step learned (plain values: the transaction is over)."""

    tenant_id: str | None
    tenant_slug: str | None
    tenant_kind: str | None
    user_id: str | None
    source: str | None
    status: str | None
    password_hash: str | None
    locked_until: datetime | None
    directory: Any


class Logins:
    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self.db = auth.db
        self.policy = auth.policy
        self._config = auth.runtime.config
        self._forwarding_token: str | None | object = _UNREAD

    @property
    def forwarding_token(self) -> str | None:
        # Read on first use (a mounted file; the preflight reads it at start): building the wiring
        # alone, e.g. to declare the worker's queues, must not need the secret.
        if self._forwarding_token is _UNREAD:
            self._forwarding_token = forwarding_token(self._config)
        return self._forwarding_token

    def client_address(self, peer: str | None, forwarded: str | None, token: str | None) -> str | None:
        """The address a sign-in is throttled by: the caller's, or the browser's when the portal says so.

        Only a caller presenting the forwarding token (the portal) may name another address; anyone
        else naming one is ignored, or they could spread their attempts over invented addresses.
        """
        if not (
            self.forwarding_token
            and forwarded
            and token
            and hmac.compare_digest(token.encode(), self.forwarding_token.encode())
        ):
            return peer
        try:
            return str(ipaddress.ip_address(forwarded.strip()))
        except ValueError:
            return peer

    # --- tokens -----------------------------------------------------------------------------------

    def _access_token(
        self, user_id: str, tenant_slug: str, roles: list[str], groups: list[str], now: datetime, jti: str
    ) -> str:
        iat = int(now.timestamp())
        return self.auth.signing_keys.sign(
            {
                "sub": user_id,
                "tenant": tenant_slug,
                "roles": roles,
                "groups": groups,
                "iat": iat,
                "exp": iat + self.policy.access_ttl,
                "iss": self.policy.issuer,
                "jti": jti,
            }
        )

    def _issue(
        self,
        session: Session,
        user_row,
        tenant_slug: str,
        now: datetime,
        *,
        family_id: str,
        session_expires_at: datetime,
        roles: list[str] | None = None,
    ) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(32)
        jti = uuid.uuid4().hex  # kept with the refresh token: ending the session revokes this access token
        session.execute(
            refresh_tokens.insert().values(
                id=str(uuid.uuid4()),
                token_hash=token_hash(refresh),
                family_id=family_id,
                user_id=user_row.id,
                created_at=now,
                expires_at=min(now + timedelta(seconds=self.policy.refresh_ttl), session_expires_at),
                session_expires_at=session_expires_at,
                access_jti=jti,
            )
        )
        roles = self.auth.roles_of(session, user_row.id) if roles is None else roles
        groups = self.auth.groups_of(session, user_row)
        return {
            "access_token": self._access_token(user_row.id, tenant_slug, roles, groups, now, jti),
            "token_type": "Bearer",
            "expires_in": self.policy.access_ttl,
            "refresh_token": refresh,
        }

    # --- brute force ------------------------------------------------------------------------------

    def client_key(self, address: str | None) -> int | None:
        # A keyed hash: an IP address is personal data (R16); this only tells addresses apart.
        return self.auth.client_index.of("client_address", address) if address else None

    def _client_blocked(self, session: Session, client: int | None, now: datetime) -> bool:
        if client is None:
            return False
        until = session.scalar(select(client_failures.c.blocked_until).where(client_failures.c.client == client))
        return until is not None and as_utc(until) > now

    def _count_client_failure(self, session: Session, client: int | None, now: datetime) -> None:
        if client is None:
            return
        window = timedelta(seconds=self.policy.client_window_seconds)
        dialect = session.get_bind().dialect.name
        module = postgresql if dialect == "postgresql" else sqlite if dialect == "sqlite" else None
        values = dict(client=client, failures=0, window_started_at=now, blocked_until=None, expires_at=now + window)
        if module is not None:
            session.execute(module.insert(client_failures).values(**values).on_conflict_do_nothing())
        elif session.scalar(select(client_failures.c.client).where(client_failures.c.client == client)) is None:
            session.execute(insert(client_failures).values(**values))
        row = session.execute(select(client_failures).where(client_failures.c.client == client).with_for_update()).one()
        if as_utc(row.window_started_at) + window <= now:
            failures, started = 1, now  # the window has passed: count afresh
        else:
            failures, started = row.failures + 1, as_utc(row.window_started_at)
        blocked = now + window if failures >= self.policy.client_max_failures else as_utc(row.blocked_until)
        session.execute(
            update(client_failures)
            .where(client_failures.c.client == client)
            .values(
                failures=failures,
                window_started_at=started,
                blocked_until=blocked,
                expires_at=max(started + window, blocked or now),
            )
        )

    def _count_account_failure(self, session: Session, attempt: Attempt, now: datetime) -> None:
        session.execute(
            update(users)
            .where(users.c.id == attempt.user_id)
            .values(failed_count=users.c.failed_count + 1, last_failed_at=now)
        )
        count = session.scalar(select(users.c.failed_count).where(users.c.id == attempt.user_id))
        if count is not None and count >= self.policy.max_failed_logins:
            until = now + timedelta(seconds=self.policy.lockout_seconds)
            # The count starts again after the lock, so the wait is what slows an attacker down.
            session.execute(
                update(users).where(users.c.id == attempt.user_id).values(failed_count=0, locked_until=until)
            )
            self.auth.emit(
                session,
                events.ACCOUNT_LOCKED,
                None,
                {"user_id": attempt.user_id, "failures": count, "locked_until": rfc3339(until)},
                tenant=attempt.tenant_slug,
                subject=user_subject(attempt.user_id),
                resource={"type": "user", "id": attempt.user_id},
                actor=None,
            )

    def _history(
        self,
        session: Session,
        attempt: Attempt | None,
        now: datetime,
        outcome: str,
        reason: str | None,
        method: str | None,
        client: int | None,
        user_id: str | None = None,
    ) -> None:
        # ``user_id`` names a user created during this login (a directory user's first login), whom the
        # attempt could not know yet; without it that login would be nobody's (art. 15 export, erasure).
        session.execute(
            login_history.insert().values(
                id=str(uuid.uuid4()),
                tenant_id=attempt.tenant_id if attempt else None,
                user_id=user_id or (attempt.user_id if attempt else None),
                at=now,
                outcome=outcome,
                reason=reason,
                method=method,
                client=client,
            )
        )

    def _fail(
        self, attempt: Attempt | None, reason: str, client: int | None, now: datetime, *, count: bool = True
    ) -> Unauthorized:
        """Record a failed login (its own transaction: it must stick) and return the generic error."""
        with self.db.transaction() as session:
            method = (
                attempt.source
                if attempt and attempt.source
                else ("directory" if attempt and attempt.directory else None)
            )
            self._history(session, attempt, now, "failed", reason, method, client)
            if count:
                self._count_client_failure(session, client, now)
                if attempt is not None and attempt.user_id and reason in ("wrong_password",):
                    self._count_account_failure(session, attempt, now)
            user_id = attempt.user_id if attempt else None
            self.auth.emit(
                session,
                events.LOGIN_FAILED,
                None,
                {"user_id": user_id, "tenant_id": attempt.tenant_id if attempt else None, "reason": reason},
                tenant=attempt.tenant_slug if attempt else None,
                subject=user_subject(user_id) if user_id else None,
                resource={"type": "user", "id": user_id} if user_id else None,
                actor=None,
            )
        return Unauthorized(LOGIN_FAILED)

    # --- login ------------------------------------------------------------------------------------

    def _read(self, session: Session, slug: str, username: str) -> Attempt | None:
        tenant = session.execute(select(tenants).where(tenants.c.slug == slug)).first()
        if tenant is None:
            return None
        user = self.auth.find_user(session, tenant.id, username)
        directory = None
        if user is None or user.source == "directory":
            directory = self.auth.directory_config(session, tenant.id)
        return Attempt(
            tenant.id,
            tenant.slug,
            tenant.kind,
            user.id if user else None,
            user.source if user else None,
            user.status if user else None,
            user.password_hash if user else None,
            as_utc(user.locked_until) if user else None,
            directory,
        )

    def login(self, slug: str, username: str, password: str, client_address: str | None = None) -> dict[str, Any]:
        auth = self.auth
        now = auth.now()
        client = self.client_key(client_address)
        try:
            username = normalise_username(username)
        except Invalid:
            auth.hasher.dummy_verify(password)
            raise self._fail(None, "unknown_user", client, now) from None
        with self.db.transaction() as session:
            blocked = self._client_blocked(session, client, now)
            attempt = None if blocked else self._read(session, slug, username)
        if blocked:
            # No hash here: a blocked address is the one flooding us, and spending Argon2's memory and
            # time on each of its attempts is what the block exists to stop.
            raise self._fail(None, "client_blocked", client, now, count=False)
        if attempt is None:
            auth.hasher.dummy_verify(password)
            raise self._fail(None, "unknown_tenant", client, now)
        # Locked or disabled accounts are refused before the password is checked, so an attacker
        # learns nothing about the password from them; the dummy hash keeps the timing alike.
        if attempt.locked_until is not None and attempt.locked_until > now:
            auth.hasher.dummy_verify(password)
            raise self._fail(attempt, "locked", client, now)
        if attempt.status is not None and attempt.status != "active":
            auth.hasher.dummy_verify(password)
            raise self._fail(attempt, "disabled", client, now)
        directory_user, mapped_roles = None, []
        if attempt.user_id is not None and attempt.source == "local":
            if not auth.hasher.verify(password, attempt.password_hash):
                raise self._fail(attempt, "wrong_password", client, now)
        elif attempt.directory is not None:
            try:
                directory_user, mapped_roles = DirectoryClient(attempt.directory).authenticate(username, password)
            except DirectoryUnavailable:
                self._fail(attempt, "directory_unavailable", client, now, count=False)
                raise Unavailable(DIRECTORY_DOWN) from None
            except DirectoryRejected:
                raise self._fail(
                    attempt, "wrong_password" if attempt.user_id else "unknown_user", client, now
                ) from None
        else:
            auth.hasher.dummy_verify(password)
            raise self._fail(attempt, "unknown_user", client, now)
        return self._succeed(attempt, username, password, directory_user, mapped_roles, client, now)

    def _succeed(
        self,
        attempt: Attempt,
        username: str,
        password: str,
        directory_user,
        mapped_roles: list[str],
        client: int | None,
        now: datetime,
    ) -> dict[str, Any]:
        auth = self.auth
        allowed = VENDOR_ROLES if attempt.tenant_kind == "vendor" else TENANT_ROLES
        mapped_roles = [r for r in mapped_roles if r in allowed]
        jit_actor = {"id": JIT_ACTOR_ID, "tenant": attempt.tenant_slug, "kind": "system"}
        signed_in: dict[str, Any] = {"failed_count": 0, "locked_until": None, "last_login_at": now}
        with self.db.transaction() as session:
            user, updated = None, False
            if attempt.user_id is not None and directory_user is None:
                # A local login: lock and update the row in one round trip, only if the user may
                # still sign in; otherwise read it (locked) to learn why, and change nothing.
                user = session.execute(
                    update(users)
                    .where(users.c.id == attempt.user_id, users.c.status == "active", users.c.source == "local")
                    .values(**signed_in)
                    .returning(*users.c)
                ).first()
                updated = user is not None
                if user is None:
                    user = session.execute(select(users).where(users.c.id == attempt.user_id).with_for_update()).first()
            elif attempt.user_id is not None:
                user = session.execute(select(users).where(users.c.id == attempt.user_id).with_for_update()).first()
            elif directory_user is not None:
                # Just in time: the first directory login creates the account with the minimal fields.
                auth.tenant_row(session, attempt.tenant_slug, lock=True)
                user = auth.find_user(session, attempt.tenant_id, username)
                if user is None:
                    created = auth.create_user(
                        session,
                        None,
                        attempt.tenant_slug,
                        username=username,
                        display_name=directory_user.display_name,
                        email=_email_or_none(directory_user.email),
                        roles=mapped_roles,
                        source="directory",
                        groups=directory_user.groups,
                        role_source="directory",
                        actor=jit_actor,
                    )
                    user = session.execute(select(users).where(users.c.id == created["id"])).first()
            fail = None
            if user is None:
                fail = "unknown_user"  # deleted between the two steps
            elif user.status != "active":
                fail = "disabled"  # disabled between the two steps
            elif user.source == "directory" and directory_user is None:
                fail = "unknown_user"
            if fail is None:
                actor = {"id": user.id, "tenant": attempt.tenant_slug, "kind": "user"}
                values: dict[str, Any] = {} if updated else dict(signed_in)
                if user.source == "local" and auth.hasher.needs_rehash(user.password_hash):
                    values["password_hash"] = auth.hasher.hash(password)  # parameters were raised since
                if values:
                    session.execute(update(users).where(users.c.id == user.id).values(**values))
                if directory_user is not None:
                    auth.sync_directory_user(
                        session,
                        attempt.tenant_slug,
                        user,
                        display_name=directory_user.display_name,
                        email=directory_user.email,
                        groups=directory_user.groups,
                        roles=mapped_roles,
                        actor=actor,
                    )
                    user = session.execute(select(users).where(users.c.id == user.id)).first()
                family_id = str(uuid.uuid4())
                roles = auth.roles_of(session, user.id)  # for the token and the event: one read
                tokens = self._issue(
                    session,
                    user,
                    attempt.tenant_slug,
                    now,
                    family_id=family_id,
                    session_expires_at=now + timedelta(seconds=self.policy.session_max_age),
                    roles=roles,
                )
                method = user.source
                self._history(session, attempt, now, "succeeded", None, method, client, user_id=user.id)
                auth.emit(
                    session,
                    events.LOGIN_SUCCEEDED,
                    None,
                    {
                        "user_id": user.id,
                        "tenant_id": attempt.tenant_id,
                        "method": method,
                        "session_id": family_id,
                        "roles": roles,
                    },
                    tenant=attempt.tenant_slug,
                    subject=user_subject(user.id),
                    resource={"type": "user", "id": user.id},
                    actor=actor,
                )
                return tokens
        raise self._fail(attempt, fail, client, now)

    # --- refresh and logout -----------------------------------------------------------------------

    def refresh(self, token: str) -> dict[str, Any]:
        auth = self.auth
        now = auth.now()
        hashed = token_hash(token)
        with self.db.transaction() as session:
            row = session.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == hashed)).first()
            if row is None or row.revoked_at is not None:
                raise Unauthorized(REFRESH_FAILED)
            user = session.execute(select(users).where(users.c.id == row.user_id)).first()
            tenant = session.execute(select(tenants).where(tenants.c.id == user.tenant_id)).first()
            reused = row.rotated_at is not None
            if reused:
                # A rotated token came back: someone holds a copy. End the whole session (family).
                auth.revoke_sessions(
                    session, None, tenant.slug, user.id, "reuse_detected", family_id=row.family_id, actor=None
                )
            elif user.status != "active":
                auth.revoke_sessions(
                    session, None, tenant.slug, user.id, "user_disabled", family_id=row.family_id, actor=None
                )
            directory = auth.directory_config(session, tenant.id) if user.source == "directory" else None
            username = auth.vault.decrypt(session, "users", "username", user.id, user.username)
        if reused or user.status != "active" or as_utc(row.expires_at) <= now:
            raise Unauthorized(REFRESH_FAILED)
        looked_up = None
        if user.source == "directory":
            # Refresh re-checks the directory, so a disabled or removed directory user is out within
            # one access-token lifetime rather than at the end of the session.
            looked_up = self._directory_lookup(directory, username)
            if looked_up is None:
                with self.db.transaction() as session:
                    auth.revoke_sessions(
                        session, None, tenant.slug, user.id, "directory_rejected", family_id=row.family_id, actor=None
                    )
                raise Unauthorized(REFRESH_FAILED)
        with self.db.transaction() as session:
            rotated = session.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.id == row.id,
                    refresh_tokens.c.rotated_at.is_(None),
                    refresh_tokens.c.revoked_at.is_(None),
                )
                .values(rotated_at=now)
            ).rowcount
            if rotated:
                if looked_up is not None:
                    directory_user, roles = looked_up
                    allowed = VENDOR_ROLES if tenant.kind == "vendor" else TENANT_ROLES
                    auth.sync_directory_user(
                        session,
                        tenant.slug,
                        user,
                        display_name=directory_user.display_name,
                        email=directory_user.email,
                        groups=directory_user.groups,
                        roles=[r for r in roles if r in allowed],
                        actor={"id": user.id, "tenant": tenant.slug, "kind": "user"},
                    )
                    user = session.execute(select(users).where(users.c.id == user.id)).first()
                return self._issue(
                    session,
                    user,
                    tenant.slug,
                    now,
                    family_id=row.family_id,
                    session_expires_at=as_utc(row.session_expires_at),
                )
        # Another request rotated this token between our read and our write: treat it as reuse.
        with self.db.transaction() as session:
            auth.revoke_sessions(
                session, None, tenant.slug, user.id, "reuse_detected", family_id=row.family_id, actor=None
            )
        raise Unauthorized(REFRESH_FAILED)

    def _directory_lookup(self, directory, username: str):
        if directory is None:
            return None
        try:
            return DirectoryClient(directory).lookup(username)
        except DirectoryUnavailable:
            raise Unavailable(DIRECTORY_DOWN) from None

    def logout(self, by: Principal, refresh_token: str | None = None, everywhere: bool = False) -> int:
        """End the session of ``refresh_token`` (if it is the caller's), or all the caller's sessions;
        the access tokens of the ended sessions, the caller's own among them, are revoked with them."""
        auth = self.auth
        actor = by.actor
        with self.db.transaction() as session:
            if everywhere:
                ended = auth.revoke_sessions(session, by, by.tenant, by.user_id, "logout", actor=actor)
            else:
                row = session.execute(
                    select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash(refresh_token or ""))
                ).first()
                if row is None or row.user_id != by.user_id:
                    return 0  # someone else's or unknown: nothing to end, and nothing to tell
                ended = auth.revoke_sessions(
                    session, by, by.tenant, by.user_id, "logout", family_id=row.family_id, actor=actor
                )
            # The calling token may come from another session (or none, e.g. the CLI's): revoke it too.
            expires = by.claims.get("exp")
            if by.token_id and isinstance(expires, (int, float)):
                auth.revoke_access_tokens(session, [(by.token_id, datetime.fromtimestamp(expires, UTC))])
            return ended

    def change_own_password(self, by: Principal, current: str, new: str) -> None:
        """A local user changes their own password; a wrong current password counts as a failed login."""
        auth = self.auth
        now = auth.now()
        with self.db.transaction() as session:
            tenant = auth.tenant_row(session, by.tenant or "")
            user = auth.user_row(session, tenant.id, by.user_id)
        if user.source != "local":
            raise Conflict("directory users change their password in the directory")
        auth.hasher.check_policy(new, field="new_password")
        if not auth.hasher.verify(current, user.password_hash):
            attempt = Attempt(
                tenant.id,
                tenant.slug,
                tenant.kind,
                user.id,
                user.source,
                user.status,
                user.password_hash,
                as_utc(user.locked_until),
                None,
            )
            with self.db.transaction() as session:
                self._count_account_failure(session, attempt, now)
            raise AccessDenied("the current password is wrong")
        with self.db.transaction() as session:
            auth.set_password(session, by, tenant.slug, user.id, new, changed_by="self")

    def check_directory(self, by: Principal, slug: str) -> None:
        """Bind as the tenant's service account (an administrator's connection test)."""
        auth = self.auth
        auth.require_tenant_access(by, slug, admin=True)
        with self.db.transaction() as session:
            tenant = auth.tenant_row(session, slug)
            directory = auth.directory_config(session, tenant.id)
        if directory is None:
            raise NotFound("this tenant has no directory configured")
        try:
            DirectoryClient(directory).check()
        except DirectoryUnavailable as exc:
            raise Unavailable(f"the directory check failed: {exc}") from None

    # --- housekeeping -----------------------------------------------------------------------------

    def purge(self) -> dict[str, int]:
        """Delete login data past its retention: old login history, expired counters and sessions."""
        now = self.auth.now()
        with self.db.transaction() as session:
            history = session.execute(
                delete(login_history).where(login_history.c.at < now - timedelta(days=self.policy.login_history_days))
            ).rowcount
            clients = session.execute(delete(client_failures).where(client_failures.c.expires_at < now)).rowcount
            sessions = session.execute(
                delete(refresh_tokens).where(refresh_tokens.c.session_expires_at < now - timedelta(days=1))
            ).rowcount
            revoked = session.execute(delete(revoked_tokens).where(revoked_tokens.c.expires_at <= now)).rowcount
        return {
            "login_history": history,
            "client_failures": clients,
            "refresh_tokens": sessions,
            "revoked_tokens": revoked,
        }


def _email_or_none(value: str | None) -> str | None:
    try:
        return normalise_email(value) if value else None
    except Invalid:
        return None
