"""The auth service's side of data-subject requests: its data inventory (R3, R5, R6), and how it
finds, exports and erases a person's login data (R1, R2)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.clock import rfc3339
from shared.errors import Invalid
from shared.normalise import normalise_email
from shared.privacy import Candidate, Category, Context, DataField, ErasureItem, Inventory

from .domain import Auth, user_subject
from .models import client_failures, login_history, refresh_tokens, tenants, users

LEGITIMATE_INTEREST = "GDPR art. 6(1)(f) legitimate interest: secure access to the service"
CONTRACT = "GDPR art. 6(1)(b) contract: the customer's staff need accounts to use the service"

INVENTORY = Inventory(
    service="auth",
    categories=(
        Category(
            kind="user_account",
            data_subjects="the customers' staff and the vendor's staff who log in",
            fields=(
                DataField(
                    "username",
                    "to log in, and to tell accounts apart when troubleshooting",
                    encrypted=True,
                    blind_indexed=True,
                ),
                DataField("display_name", "to show who is logged in and who did what", encrypted=True),
                DataField(
                    "email",
                    "to reach the person about their account; GDPR requests by e-mail",
                    encrypted=True,
                    blind_indexed=True,
                ),
                DataField("roles", "what the person may do (access control)"),
                DataField("groups", "directory groups, mapped to roles at each login", encrypted=True),
                DataField("source", "local password or directory login", personal=False),
                DataField("status", "whether the account may log in", personal=False),
                DataField("password_hash", "Argon2id hash of a local password (never the password)"),
                DataField("created_at", "troubleshooting", personal=False),
                DataField("last_login_at", "troubleshooting, and finding unused accounts"),
                DataField("failed_logins", "brute-force protection: failed attempts and lock state"),
            ),
            purposes=("let the person log in and use the system", "troubleshooting"),
            legal_basis=CONTRACT,
            role="controller",
            controller="vendor",
            retention="while the account exists; deleted on erasure or when an administrator deletes it",
            recipients=("the customer's administrators (their own tenant)", "the vendor's support"),
            storage="auth database, table users (+ user_roles)",
            erasure="deleted",
        ),
        Category(
            kind="login_history",
            data_subjects="the customers' staff and the vendor's staff who log in",
            fields=(
                DataField("at", "when a login was tried"),
                DataField("outcome", "succeeded or failed, and why (never shown to the caller)"),
                DataField("client", "keyed hash of the client's IP address (R16), to block brute force"),
            ),
            purposes=("security: detect and stop password guessing", "troubleshooting failed logins"),
            legal_basis=LEGITIMATE_INTEREST,
            role="controller",
            controller="vendor",
            retention="LOGIN_HISTORY_DAYS days (default 90), then deleted",
            storage="auth database, table login_history",
            erasure="anonymised",
        ),
        Category(
            kind="session",
            data_subjects="the customers' staff and the vendor's staff who log in",
            fields=(
                DataField("refresh_token_hash", "SHA-256 of a refresh token (the token itself is never stored)"),
                DataField("created_at", "when the session started or was refreshed"),
                DataField("expires_at", "when the session ends"),
            ),
            purposes=("keep the person logged in without their password",),
            legal_basis=CONTRACT,
            role="controller",
            controller="vendor",
            retention="until the session expires (SESSION_MAX_AGE) plus one day",
            storage="auth database, table refresh_tokens",
            erasure="deleted",
        ),
        Category(
            kind="client_address_counter",
            data_subjects="anyone who tries to log in",
            fields=(DataField("client", "keyed hash of the client's IP address, with a failure count"),),
            purposes=("security: block an address that guesses passwords",),
            legal_basis=LEGITIMATE_INTEREST,
            role="controller",
            controller="vendor",
            retention="CLIENT_WINDOW_SECONDS (default 15 minutes) after the last failure",
            storage="auth database, table client_failures",
            erasure="deleted",
        ),
        Category(
            kind="agreement_signatory",
            data_subjects="the person who signed a customer's data processing agreement",
            fields=(DataField("signatory", "who signed the data processing agreement (R5)", encrypted=True),),
            purposes=("record the data processing agreement with each customer (R5)",),
            legal_basis="GDPR art. 6(1)(c) legal obligation: art. 28(3) requires the agreement in writing",
            role="controller",
            controller="vendor",
            retention="while the agreement is in force, then as long as claims under it can be made",
            storage="auth database, table tenants",
            erasure="retained",
        ),
    ),
)


class AuthParticipant:
    """GDPR participation of the auth service (shared.privacy.Participant)."""

    inventory = INVENTORY

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    def counts(self, session: Session) -> dict[str, int]:
        def count(table, *where) -> int:
            return session.scalar(select(func.count()).select_from(table).where(*where))

        return {
            "user_account": count(users),
            "login_history": count(login_history, login_history.c.user_id.is_not(None)),
            "session": count(refresh_tokens, refresh_tokens.c.revoked_at.is_(None)),
            "client_address_counter": count(client_failures),
            "agreement_signatory": count(tenants, tenants.c.dpa_signatory.is_not(None)),
        }

    def tenant_counts(self, session: Session) -> dict[str, dict[str, int]]:
        """Accounts, logins and live sessions per tenant slug (a customer's records of processing, issue 15)."""
        out: dict[str, dict[str, int]] = {}

        def add(kind: str, query) -> None:
            for slug, n in session.execute(query):
                out.setdefault(slug, {})[kind] = int(n)

        add("user_account", select(tenants.c.slug, func.count()).join_from(users, tenants).group_by(tenants.c.slug))
        add(
            "login_history",
            select(tenants.c.slug, func.count())
            .select_from(login_history)
            .join(tenants, tenants.c.id == login_history.c.tenant_id)
            .where(login_history.c.user_id.is_not(None))
            .group_by(tenants.c.slug),
        )
        add(
            "session",
            select(tenants.c.slug, func.count())
            .select_from(refresh_tokens)
            .join(users, users.c.id == refresh_tokens.c.user_id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(refresh_tokens.c.revoked_at.is_(None))
            .group_by(tenants.c.slug),
        )
        add(
            "agreement_signatory",
            select(tenants.c.slug, func.count()).where(tenants.c.dpa_signatory.is_not(None)).group_by(tenants.c.slug),
        )
        return out

    def candidates(self, session: Session, ctx: Context) -> list[Candidate]:
        """The preview: each account found by username or e-mail (exact matches), with its tenant and
        status; never the username, name or address.  (Logins are not counted on the card: a login
        between preview and approval would make the account's candidate stale.)"""
        out = []
        for reference in self.resolve(session, ctx):
            row = session.execute(select(users).where(users.c.id == reference.split(":", 2)[2])).first()
            if row is None:
                continue
            tenant = session.scalar(select(tenants.c.slug).where(tenants.c.id == row.tenant_id))
            card = {"label": f"login account in tenant {tenant} ({row.status})", "tenant": tenant, "status": row.status}
            out.append(Candidate("user_account", "exact", card, (reference,), 1, rfc3339(row.updated_at)))
        return out

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        """``auth:user:<id>`` for the accounts with this username or e-mail (in the tenant, if given)."""
        auth = self.auth
        tenant_id = None
        if ctx.tenant:
            tenant_id = session.scalar(select(tenants.c.id).where(tenants.c.slug == ctx.tenant))
            if tenant_id is None:
                return []
        found: dict[str, None] = {}
        username = ctx.subject.get("username")
        if username:
            tenant_ids = [tenant_id] if tenant_id else list(session.scalars(select(tenants.c.id)))
            for tid in tenant_ids:
                try:
                    row = auth.find_user(session, tid, username)
                except Invalid:
                    break
                if row is not None:
                    found[user_subject(row.id)] = None
        email = ctx.subject.get("email")
        if email:
            try:
                normalised = normalise_email(email)
            except Invalid:
                normalised = None
            if normalised:
                for row in auth.users_by_email(session, normalised, tenant_id):
                    found[user_subject(row.id)] = None
        return list(found)

    @staticmethod
    def _user_ids(references: list[str]) -> list[str]:
        return [r.split(":", 2)[2] for r in references if r.startswith("auth:user:")]

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict]]:
        auth = self.auth
        out: dict[str, list[dict]] = {"user_account": [], "login_history": [], "session": []}
        for user_id in self._user_ids(references):
            row = session.execute(select(users).where(users.c.id == user_id)).first()
            if row is None:
                continue
            slug = session.scalar(select(tenants.c.slug).where(tenants.c.id == row.tenant_id))
            view = auth.user_view(session, row, slug)
            out["user_account"].append({"reference": user_subject(user_id), **view})
            for entry in session.execute(
                select(login_history).where(login_history.c.user_id == user_id).order_by(login_history.c.at)
            ):
                out["login_history"].append(
                    {
                        "reference": user_subject(user_id),
                        "at": rfc3339(entry.at),
                        "outcome": entry.outcome,
                        "reason": entry.reason,
                        "method": entry.method,
                    }
                )
            for token in session.execute(
                select(refresh_tokens).where(refresh_tokens.c.user_id == user_id).order_by(refresh_tokens.c.created_at)
            ):
                out["session"].append(
                    {
                        "reference": user_subject(user_id),
                        "session_id": token.family_id,
                        "created_at": rfc3339(token.created_at),
                        "expires_at": rfc3339(token.expires_at),
                        "rotated_at": rfc3339(token.rotated_at),
                        "revoked_at": rfc3339(token.revoked_at),
                    }
                )
        return out

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        """Disable, end the sessions, anonymise the login history, crypto-shred and delete the account."""
        auth = self.auth
        totals = {"user_account": 0, "login_history": 0, "session": 0}
        actor = {"id": f"gdpr:{ctx.request_id}"[:100], "tenant": ctx.tenant, "kind": "system"}
        for user_id in self._user_ids(references):
            row = session.execute(select(users).where(users.c.id == user_id).with_for_update()).first()
            if row is None:
                continue  # already erased: a repeated command reports zero
            slug = session.scalar(select(tenants.c.slug).where(tenants.c.id == row.tenant_id))
            counts = auth.remove_user(session, None, slug, row, reason="erasure", actor=actor)
            for kind, n in counts.items():
                totals[kind] += n
        return [
            ErasureItem("user_account", "deleted", totals["user_account"]),
            ErasureItem("session", "deleted", totals["session"]),
            ErasureItem("login_history", "anonymised", totals["login_history"]),
        ]
