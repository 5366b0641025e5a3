"""The auth service's rules for tenants, their directory settings, users and roles (R5, R6, R10).

No Flask here: the api, the CLI and the GDPR participant all call ``Auth``.  Callers are
``Principal``s (or ``None`` for the operator's CLI, which may do anything).  Personal values
are encrypted per user with the Vault (subject ``auth:user:<id>``) and found again through
blind indexes; the directory bind secret and the agreement's signatory are encrypted under
the tenant's subject (``auth:tenant:<id>``).
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339, utcnow
from shared.crypto import ERASED, BlindIndex
from shared.errors import AccessDenied, Conflict, Invalid, NotFound
from shared.normalise import normalise_email
from shared.tokens import TENANT_ROLES, VENDOR_ROLES, Principal

from . import events
from .directory import TLS_MODES, DirectoryConfig, ldap_filter_ok
from .models import directories, login_history, refresh_tokens, revoked_tokens, tenants, user_roles, users
from .passwords import PasswordHasher

ROLE_DESCRIPTIONS = {
    "vendor_admin": "vendor: manages tenants, their agreements, directories and users",
    "support": "vendor: reads tenants and users to troubleshoot",
    "compliance_officer": "vendor: handles data-subject requests and the data inventory",
    "auditor": "vendor: reads the audit trail",
    "tenant_admin": "customer: manages the users and the directory of its own tenant",
    "privacy_officer": "customer: the controller's privacy officer; opens, approves and confirms data-subject "
    "requests of its own tenant and reads its records of processing",
    "staff": "customer: uses the system",
}
SYSTEM_ACTOR = {"id": "cli", "tenant": None, "kind": "system"}
FROM_CALLER = object()  # Auth.emit's default actor: the caller (``by``), or the CLI when there is none
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
REVOCATION_MARGIN = 60  # seconds a revocation outlives its token: clock skew and verifiers' leeway


def normalise_username(value: Any, field: str = "username") -> str:
    """NFKC, trimmed, case-folded: directories compare login names without case."""
    if not isinstance(value, str):
        raise Invalid("the username is not valid", errors=[{"field": field, "message": "must be a string"}])
    text = unicodedata.normalize("NFKC", value).strip().casefold()
    if not 1 <= len(text) <= 256 or any(unicodedata.category(ch)[0] == "C" for ch in text):
        raise Invalid("the username is not valid", errors=[{"field": field, "message": "is not a valid username"}])
    return text


def user_subject(user_id: str) -> str:
    return f"auth:user:{user_id}"


def tenant_subject(tenant_id: str) -> str:
    return f"auth:tenant:{tenant_id}"


def actor_of(by: Principal | None) -> dict[str, Any]:
    return by.actor if by is not None else SYSTEM_ACTOR


@dataclass(frozen=True)
class Policy:
    """The service's tunable rules, from its settings."""

    access_ttl: int = 300
    refresh_ttl: int = 43_200
    session_max_age: int = 604_800
    max_failed_logins: int = 5
    lockout_seconds: int = 900
    client_max_failures: int = 20
    client_window_seconds: int = 900
    vendor_tenant: str = "vendor"
    allow_plain_ldap: bool = False
    login_history_days: int = 90
    issuer: str = "recept-auth"

    @classmethod
    def from_config(cls, config) -> Policy:
        return cls(
            access_ttl=config["ACCESS_TOKEN_TTL"],
            refresh_ttl=config["REFRESH_TOKEN_TTL"],
            session_max_age=config["SESSION_MAX_AGE"],
            max_failed_logins=config["MAX_FAILED_LOGINS"],
            lockout_seconds=config["LOCKOUT_SECONDS"],
            client_max_failures=config["CLIENT_MAX_FAILURES"],
            client_window_seconds=config["CLIENT_WINDOW_SECONDS"],
            vendor_tenant=config["VENDOR_TENANT"],
            allow_plain_ldap=config["ALLOW_PLAIN_LDAP"],
            login_history_days=config["LOGIN_HISTORY_DAYS"],
            issuer=config["TOKEN_ISSUER"],
        )


class Auth:
    """Everything the auth service does, on one runtime (shared.service.Runtime)."""

    def __init__(self, runtime, *, clock: Callable[[], datetime] | None = None) -> None:
        config = runtime.config
        self.runtime = runtime
        self.db = runtime.db
        self.vault = runtime.vault
        self.outbox = runtime.outbox
        self.policy = Policy.from_config(config)
        self.clock = clock or config.get("clock") or utcnow
        self.signing_keys = config["signing_keys"]
        self.hasher = PasswordHasher(
            memory_kib=config["ARGON2_MEMORY_KIB"],
            iterations=config["ARGON2_ITERATIONS"],
            lanes=config["ARGON2_LANES"],
            min_length=config["PASSWORD_MIN_LENGTH"],
        )
        # 16 bits: each value matches several users at scale (docs/crypto.md "Sizing").
        self.index = BlindIndex(runtime.keyring, bits=16)
        # The client-address hash only has to tell addresses apart for a few minutes: 63 bits.
        self.client_index = BlindIndex(runtime.keyring, bits=63)

    def now(self) -> datetime:
        return as_utc(self.clock())

    def emit(
        self,
        session: Session,
        event_type,
        by: Principal | None,
        data: dict[str, Any],
        *,
        tenant: str | None,
        subject: str | None = None,
        resource: dict[str, str] | None = None,
        actor: dict[str, Any] | None | object = FROM_CALLER,
    ) -> None:
        """Add an event to this transaction; the actor is ``by`` unless given (None: nobody signed in)."""
        self.outbox.emit(
            session,
            event_type,
            data=data,
            actor=actor_of(by) if actor is FROM_CALLER else actor,
            tenant=tenant,
            subject=subject,
            resource=resource,
        )

    def username_index(self, username: str) -> int:
        return self.index.of("username", normalise_username(username))

    # --- access rules -----------------------------------------------------------------------------

    def is_vendor(self, by: Principal | None, *roles: str) -> bool:
        """The CLI, or a vendor-tenant caller holding one of ``roles``."""
        if by is None:
            return True
        return by.tenant == self.policy.vendor_tenant and by.has_any_role(roles)

    def require_vendor(self, by: Principal | None, *roles: str) -> None:
        if not self.is_vendor(by, *roles):
            raise AccessDenied("your roles do not allow this operation")

    def require_tenant_access(
        self, by: Principal | None, slug: str, *, admin: bool, vendor_roles: Iterable[str] = ("vendor_admin",)
    ) -> None:
        """Vendor roles reach every tenant; a tenant admin only its own; anyone else's tenant is a 404."""
        if self.is_vendor(by, *vendor_roles):
            return
        assert by is not None
        by.require_tenant(slug)  # another tenant does not exist for this caller
        if admin and not by.has_any_role(("tenant_admin",)):
            raise AccessDenied("your roles do not allow this operation")

    def check_roles(self, tenant_row, roles: Iterable[str], by: Principal | None, field: str = "roles") -> list[str]:
        """Roles valid for this tenant's kind and grantable by ``by``."""
        roles = sorted(set(roles))
        allowed = VENDOR_ROLES if tenant_row.kind == "vendor" else TENANT_ROLES
        wrong = [r for r in roles if r not in allowed]
        if wrong:
            kind = "the vendor tenant" if tenant_row.kind == "vendor" else "a customer tenant"
            raise Invalid(
                f"these roles do not exist in {kind}: {', '.join(wrong)}",
                errors=[{"field": field, "message": f"must be among {', '.join(sorted(allowed))}"}],
            )
        if roles and not self.is_vendor(by, "vendor_admin") and not set(roles) <= TENANT_ROLES:
            raise AccessDenied("your roles do not allow granting these roles")
        return roles

    # --- tenants ----------------------------------------------------------------------------------

    def tenant_row(self, session: Session, slug: str, *, lock: bool = False):
        query = select(tenants).where(tenants.c.slug == slug)
        if lock:
            query = query.with_for_update()
        row = session.execute(query).first()
        if row is None:
            raise NotFound("no such tenant")
        return row

    def tenant_view(self, session: Session, row, *, with_agreement: bool = True) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": row.id,
            "slug": row.slug,
            "name": row.name,
            "kind": row.kind,
            "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at),
        }
        if with_agreement:
            signatory = self.vault.decrypt(session, "tenants", "dpa_signatory", row.id, row.dpa_signatory)
            view["agreement"] = (
                None
                if row.dpa_version is None
                else {
                    "version": row.dpa_version,
                    "signed_on": row.dpa_signed_on.isoformat() if row.dpa_signed_on else None,
                    "signatory": "(erased)" if signatory is ERASED else signatory,
                }
            )
            view["directory"] = (
                session.scalar(select(func.count()).select_from(directories).where(directories.c.tenant_id == row.id))
                > 0
            )
        return view

    def create_tenant(
        self, session: Session, by: Principal | None, slug: str, name: str, agreement: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.require_vendor(by, "vendor_admin")
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise Invalid(
                "the tenant slug is not valid",
                errors=[{"field": "slug", "message": "use 2-63 of a-z, 0-9 and '-', starting with a letter or digit"}],
            )
        name = (name or "").strip()
        if not 1 <= len(name) <= 200:
            raise Invalid(
                "the tenant name is not valid", errors=[{"field": "name", "message": "needs 1-200 characters"}]
            )
        if session.scalar(select(func.count()).select_from(tenants).where(tenants.c.slug == slug)):
            raise Conflict("a tenant with this slug exists")
        now = self.now()
        tenant_id = str(uuid.uuid4())
        kind = "vendor" if slug == self.policy.vendor_tenant else "customer"
        session.execute(
            tenants.insert().values(id=tenant_id, slug=slug, name=name, kind=kind, created_at=now, updated_at=now)
        )
        self.emit(
            session,
            events.TENANT_CREATED,
            by,
            {"tenant_id": tenant_id, "kind": kind},
            tenant=slug,
            resource={"type": "tenant", "id": tenant_id},
        )
        if agreement:
            self.set_agreement(session, by, slug, **agreement)
        else:
            self.announce_tenant(session, self.tenant_row(session, slug), by)
        return self.tenant_view(session, self.tenant_row(session, slug))

    def announce_tenant(self, session: Session, row, by: Principal | None = None) -> None:
        """Tell the other services what this tenant is now (kind, agreement; no personal value)."""
        agreement = (
            None
            if row.dpa_version is None
            else {
                "version": row.dpa_version,
                "signed_on": row.dpa_signed_on.isoformat() if row.dpa_signed_on else None,
            }
        )
        self.emit(
            session,
            events.TENANT_ANNOUNCED,
            by,
            {"tenant_id": row.id, "kind": row.kind, "agreement": agreement},
            tenant=row.slug,
            resource={"type": "tenant", "id": row.id},
        )

    def announce_tenants(self, session: Session) -> int:
        """Every tenant again (the worker's loop: a service started after a tenant was made learns it)."""
        rows = session.execute(select(tenants).order_by(tenants.c.slug)).all()
        for row in rows:
            self.announce_tenant(session, row)
        return len(rows)

    def list_tenants(self, session: Session, by: Principal | None) -> list[dict[str, Any]]:
        self.require_vendor(by, *VENDOR_ROLES)
        rows = session.execute(select(tenants).order_by(tenants.c.slug)).all()
        return [self.tenant_view(session, r, with_agreement=False) for r in rows]

    def get_tenant(self, session: Session, by: Principal | None, slug: str) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True, vendor_roles=VENDOR_ROLES)
        return self.tenant_view(session, self.tenant_row(session, slug))

    def update_tenant(self, session: Session, by: Principal | None, slug: str, name: str) -> dict[str, Any]:
        self.require_vendor(by, "vendor_admin")
        row = self.tenant_row(session, slug)
        name = (name or "").strip()
        if not 1 <= len(name) <= 200:
            raise Invalid(
                "the tenant name is not valid", errors=[{"field": "name", "message": "needs 1-200 characters"}]
            )
        if name != row.name:
            session.execute(update(tenants).where(tenants.c.id == row.id).values(name=name, updated_at=self.now()))
            self.emit(
                session,
                events.TENANT_UPDATED,
                by,
                {"tenant_id": row.id, "fields": ["name"]},
                tenant=slug,
                resource={"type": "tenant", "id": row.id},
            )
        return self.tenant_view(session, self.tenant_row(session, slug))

    def set_agreement(
        self, session: Session, by: Principal | None, slug: str, version: str, signed_on: date | str, signatory: str
    ) -> dict[str, Any]:
        """Record the tenant's data processing agreement (R5): version, signing date, signatory."""
        self.require_vendor(by, "vendor_admin")
        row = self.tenant_row(session, slug)
        if isinstance(signed_on, str):
            try:
                signed_on = date.fromisoformat(signed_on)
            except ValueError:
                raise Invalid(
                    "the signing date is not valid", errors=[{"field": "signed_on", "message": "is not a valid date"}]
                ) from None
        signatory = (signatory or "").strip()
        version = (version or "").strip()
        problems = []
        if not 1 <= len(version) <= 50:
            problems.append({"field": "version", "message": "needs 1-50 characters"})
        if not 1 <= len(signatory) <= 200:
            problems.append({"field": "signatory", "message": "needs 1-200 characters"})
        if signed_on > self.now().date():
            problems.append({"field": "signed_on", "message": "is in the future"})
        if problems:
            raise Invalid("the agreement is not valid", errors=problems)
        old = self.vault.decrypt(session, "tenants", "dpa_signatory", row.id, row.dpa_signatory)
        changed = [
            f
            for f, before, after in (
                ("version", row.dpa_version, version),
                ("signed_on", row.dpa_signed_on, signed_on),
                ("signatory", old, signatory),
            )
            if before != after
        ]
        if changed:
            session.execute(
                update(tenants)
                .where(tenants.c.id == row.id)
                .values(
                    dpa_version=version,
                    dpa_signed_on=signed_on,
                    updated_at=self.now(),
                    dpa_signatory=self.vault.encrypt(
                        session, tenant_subject(row.id), "tenants", "dpa_signatory", row.id, signatory
                    ),
                )
            )
            self.emit(
                session,
                events.AGREEMENT_CHANGED,
                by,
                {"tenant_id": row.id, "version": version, "fields": changed},
                tenant=slug,
                subject=tenant_subject(row.id),
                resource={"type": "tenant", "id": row.id},
            )
            self.announce_tenant(session, self.tenant_row(session, slug), by)
        return self.tenant_view(session, self.tenant_row(session, slug))

    # --- directory settings -----------------------------------------------------------------------

    def directory_view(self, row) -> dict[str, Any]:
        return {
            "urls": json.loads(row.urls),
            "tls": row.tls,
            "ca_certificates": row.ca_certificates,
            "bind_dn": row.bind_dn,
            "bind_password_set": True,  # the secret itself is never returned
            "user_search_base": row.user_search_base,
            "user_filter": row.user_filter,
            "username_attribute": row.username_attribute,
            "group_search_base": row.group_search_base,
            "group_filter": row.group_filter,
            "group_name_attribute": row.group_name_attribute,
            "member_of_attribute": row.member_of_attribute,
            "display_name_attribute": row.display_name_attribute,
            "mail_attribute": row.mail_attribute,
            "group_roles": json.loads(row.group_roles),
            "timeout": row.timeout,
            "updated_at": rfc3339(row.updated_at),
        }

    def get_directory(self, session: Session, by: Principal | None, slug: str) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True, vendor_roles=("vendor_admin", "support"))
        tenant = self.tenant_row(session, slug)
        row = session.execute(select(directories).where(directories.c.tenant_id == tenant.id)).first()
        if row is None:
            raise NotFound("this tenant has no directory configured")
        return self.directory_view(row)

    def set_directory(
        self, session: Session, by: Principal | None, slug: str, settings: dict[str, Any]
    ) -> dict[str, Any]:
        """Configure (or change) the tenant's LDAP / Active Directory login (R10)."""
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        existing = session.execute(select(directories).where(directories.c.tenant_id == tenant.id)).first()
        problems = []
        tls = settings["tls"]
        if tls not in TLS_MODES:
            problems.append({"field": "tls", "message": f"must be one of {', '.join(TLS_MODES)}"})
        if tls == "none" and not self.policy.allow_plain_ldap:
            problems.append({"field": "tls", "message": "plain LDAP is not allowed here; use ldaps or starttls"})
        scheme = "ldaps://" if tls == "ldaps" else "ldap://"
        for i, url in enumerate(settings["urls"]):
            if not url.lower().startswith(scheme):
                problems.append({"field": f"urls.{i}", "message": f"must start with {scheme} for tls={tls}"})
        if "{username}" not in settings["user_filter"]:
            problems.append({"field": "user_filter", "message": "must contain {username}"})
        elif not ldap_filter_ok(settings["user_filter"]):
            problems.append({"field": "user_filter", "message": "is not a valid LDAP filter (RFC 4515)"})
        if settings.get("group_filter") and "{user_dn}" not in settings["group_filter"]:
            problems.append({"field": "group_filter", "message": "must contain {user_dn}"})
        elif settings.get("group_filter") and not ldap_filter_ok(settings["group_filter"]):
            problems.append({"field": "group_filter", "message": "is not a valid LDAP filter (RFC 4515)"})
        if settings.get("group_filter") and not settings.get("group_search_base"):
            problems.append({"field": "group_search_base", "message": "is required with group_filter"})
        if existing is None and not settings.get("bind_password"):
            problems.append({"field": "bind_password", "message": "is required"})
        elif (
            existing is not None
            and not settings.get("bind_password")
            and (
                json.loads(existing.urls) != list(settings["urls"])
                or existing.tls != tls
                or existing.bind_dn != settings["bind_dn"]
                or existing.ca_certificates != settings.get("ca_certificates")
            )
        ):
            # The stored secret goes wherever these settings point: whoever moves the connection must
            # know the secret already, or the connection test would hand it to a host of their choosing.
            problems.append(
                {
                    "field": "bind_password",
                    "message": "is required again when urls, tls, ca_certificates or bind_dn change",
                }
            )
        if problems:
            raise Invalid("the directory settings are not valid", errors=problems)
        group_roles = {}
        for group, roles in settings.get("group_roles", {}).items():
            group_roles[group] = self.check_roles(tenant, roles, by, field=f"group_roles.{group}")
        values = {
            "urls": json.dumps(list(settings["urls"])),
            "tls": tls,
            "ca_certificates": settings.get("ca_certificates"),
            "bind_dn": settings["bind_dn"],
            "user_search_base": settings["user_search_base"],
            "user_filter": settings["user_filter"],
            "username_attribute": settings.get("username_attribute", "uid"),
            "group_search_base": settings.get("group_search_base"),
            "group_filter": settings.get("group_filter"),
            "group_name_attribute": settings.get("group_name_attribute", "cn"),
            "member_of_attribute": settings.get("member_of_attribute", "memberOf"),
            "display_name_attribute": settings.get("display_name_attribute", "displayName"),
            "mail_attribute": settings.get("mail_attribute", "mail"),
            "group_roles": json.dumps(group_roles, sort_keys=True),
            "timeout": float(settings.get("timeout", 5.0)),
            "updated_at": self.now(),
        }
        changed = sorted(
            k for k, v in values.items() if k != "updated_at" and (existing is None or getattr(existing, k) != v)
        )
        if settings.get("bind_password"):
            values["bind_secret"] = self.vault.encrypt(
                session, tenant_subject(tenant.id), "directories", "bind_secret", tenant.id, settings["bind_password"]
            )
            changed.append("bind_password")
        if existing is None:
            session.execute(directories.insert().values(tenant_id=tenant.id, **values))
        else:
            session.execute(update(directories).where(directories.c.tenant_id == tenant.id).values(**values))
        if changed:
            self.emit(
                session,
                events.DIRECTORY_CONFIGURED,
                by,
                {"tenant_id": tenant.id, "fields": sorted(changed)},
                tenant=slug,
                resource={"type": "tenant", "id": tenant.id},
            )
        return self.get_directory(session, by, slug)

    def remove_directory(self, session: Session, by: Principal | None, slug: str) -> None:
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        result = session.execute(delete(directories).where(directories.c.tenant_id == tenant.id))
        if not result.rowcount:
            raise NotFound("this tenant has no directory configured")
        self.emit(
            session,
            events.DIRECTORY_REMOVED,
            by,
            {"tenant_id": tenant.id},
            tenant=slug,
            resource={"type": "tenant", "id": tenant.id},
        )

    def directory_config(self, session: Session, tenant_id: str) -> DirectoryConfig | None:
        """The tenant's directory with its decrypted bind secret, or None."""
        row = session.execute(select(directories).where(directories.c.tenant_id == tenant_id)).first()
        if row is None:
            return None
        secret = self.vault.decrypt(session, "directories", "bind_secret", tenant_id, row.bind_secret)
        return DirectoryConfig(
            urls=tuple(json.loads(row.urls)),
            tls=row.tls,
            bind_dn=row.bind_dn,
            bind_password=secret if isinstance(secret, str) else "",
            user_search_base=row.user_search_base,
            user_filter=row.user_filter,
            username_attribute=row.username_attribute,
            group_search_base=row.group_search_base,
            group_filter=row.group_filter,
            group_name_attribute=row.group_name_attribute,
            member_of_attribute=row.member_of_attribute,
            display_name_attribute=row.display_name_attribute,
            mail_attribute=row.mail_attribute,
            group_roles=json.loads(row.group_roles),
            timeout=row.timeout,
            ca_certificates=row.ca_certificates,
        )

    # --- users ------------------------------------------------------------------------------------

    def find_user(self, session: Session, tenant_id: str, username: str):
        """The user with this username in the tenant, or None (blind index, then decrypt and compare)."""
        wanted = normalise_username(username)
        rows = session.execute(
            select(users).where(
                users.c.tenant_id == tenant_id, users.c.username_idx == self.index.of("username", wanted)
            )
        ).all()
        self.vault.prefetch(session, [r.username for r in rows])
        for row in rows:
            if self.vault.decrypt(session, "users", "username", row.id, row.username) == wanted:
                return row
        return None

    def user_row(self, session: Session, tenant_id: str, user_id: str, *, lock: bool = False):
        query = select(users).where(users.c.id == user_id, users.c.tenant_id == tenant_id)
        if lock:
            query = query.with_for_update()
        row = session.execute(query).first()
        if row is None:
            raise NotFound("no such user")
        return row

    def roles_of(self, session: Session, user_id: str) -> list[str]:
        return sorted(session.scalars(select(user_roles.c.role).where(user_roles.c.user_id == user_id)))

    def groups_of(self, session: Session, row) -> list[str]:
        value = self.vault.decrypt(session, "users", "groups", row.id, row.groups)
        return json.loads(value) if isinstance(value, str) else []

    def user_view(self, session: Session, row, tenant_slug: str) -> dict[str, Any]:
        def field(name: str):
            value = self.vault.decrypt(session, "users", name, row.id, getattr(row, name))
            return "(erased)" if value is ERASED else value

        locked_until = as_utc(row.locked_until)
        return {
            "id": row.id,
            "tenant": tenant_slug,
            "username": field("username"),
            "display_name": field("display_name"),
            "email": field("email"),
            "roles": self.roles_of(session, row.id),
            "groups": self.groups_of(session, row),
            "source": row.source,
            "status": row.status,
            "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at),
            "last_login_at": rfc3339(row.last_login_at),
            "failed_logins": row.failed_count,
            "last_failed_login_at": rfc3339(row.last_failed_at),
            "locked_until": rfc3339(locked_until) if locked_until and locked_until > self.now() else None,
            "has_password": row.password_hash is not None,
        }

    def _personal(self, session: Session, user_id: str, display_name: str | None, email: str | None) -> dict[str, Any]:
        subject = user_subject(user_id)
        values: dict[str, Any] = {}
        if display_name is not None:
            display_name = display_name.strip()
            if len(display_name) > 200:
                raise Invalid(
                    "the display name is too long",
                    errors=[{"field": "display_name", "message": "takes at most 200 characters"}],
                )
        values["display_name"] = self.vault.encrypt(
            session, subject, "users", "display_name", user_id, display_name or None
        )
        if email:
            normalised = normalise_email(email)
            values["email"] = self.vault.encrypt(session, subject, "users", "email", user_id, normalised)
            values["email_idx"] = self.index.of("email", normalised)
        else:
            values["email"], values["email_idx"] = None, None
        return values

    def create_user(
        self,
        session: Session,
        by: Principal | None,
        slug: str,
        *,
        username: str,
        display_name: str | None = None,
        email: str | None = None,
        roles: Iterable[str] = (),
        password: str | None = None,
        source: str = "local",
        groups: Iterable[str] = (),
        role_source: str = "manual",
        actor: dict[str, Any] | None | object = FROM_CALLER,
    ) -> dict[str, Any]:
        """A new account; ``role_source="directory"`` is the just-in-time creation at a directory login."""
        self.require_tenant_access(by, slug, admin=True)
        # Locking the tenant row serialises user creation per tenant: the username is encrypted,
        # so uniqueness is checked here rather than by a database constraint.
        tenant = self.tenant_row(session, slug, lock=True)
        wanted = normalise_username(username)
        roles = self.check_roles(tenant, roles, by if role_source == "manual" else None)
        if source == "local" and password is not None:
            password_hash = self.hasher.hash(password)
        elif source == "directory" and password is not None:
            raise Invalid(
                "directory users have no local password",
                errors=[{"field": "password", "message": "is not accepted for directory users"}],
            )
        else:
            password_hash = None
        if self.find_user(session, tenant.id, wanted) is not None:
            raise Conflict("a user with this username exists in this tenant")
        now = self.now()
        user_id = str(uuid.uuid4())
        subject = user_subject(user_id)
        session.execute(
            users.insert().values(
                id=user_id,
                tenant_id=tenant.id,
                username=self.vault.encrypt(session, subject, "users", "username", user_id, wanted),
                username_idx=self.index.of("username", wanted),
                groups=self.vault.encrypt(session, subject, "users", "groups", user_id, json.dumps(sorted(set(groups))))
                if groups
                else None,
                source=source,
                status="active",
                password_hash=password_hash,
                failed_count=0,
                created_at=now,
                updated_at=now,
                **self._personal(session, user_id, display_name, email),
            )
        )
        resource = {"type": "user", "id": user_id}
        self.emit(
            session,
            events.USER_CREATED,
            by,
            {"user_id": user_id, "tenant_id": tenant.id, "source": source},
            tenant=slug,
            subject=subject,
            resource=resource,
            actor=actor,
        )
        for role in roles:
            session.execute(user_roles.insert().values(user_id=user_id, role=role, source=role_source, granted_at=now))
            self.emit(
                session,
                events.ROLE_GRANTED,
                by,
                {"user_id": user_id, "role": role, "source": role_source},
                tenant=slug,
                subject=subject,
                resource=resource,
                actor=actor,
            )
        return self.user_view(session, self.user_row(session, tenant.id, user_id), slug)

    def list_users(
        self, session: Session, by: Principal | None, slug: str, *, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True, vendor_roles=("vendor_admin", "support"))
        tenant = self.tenant_row(session, slug)
        total = session.scalar(select(func.count()).select_from(users).where(users.c.tenant_id == tenant.id))
        rows = session.execute(
            select(users)
            .where(users.c.tenant_id == tenant.id)
            .order_by(users.c.created_at, users.c.id)
            .limit(limit)
            .offset(offset)
        ).all()
        self.vault.prefetch(session, [r.username for r in rows])
        return {
            "items": [self.user_view(session, r, slug) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    def get_user(self, session: Session, by: Principal | None, slug: str, user_id: str) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True, vendor_roles=("vendor_admin", "support"))
        tenant = self.tenant_row(session, slug)
        return self.user_view(session, self.user_row(session, tenant.id, user_id), slug)

    def search_users(
        self,
        session: Session,
        by: Principal | None,
        slug: str,
        *,
        username: str | None = None,
        email: str | None = None,
    ) -> list[dict[str, Any]]:
        """Find users by username or e-mail (sent in a body, never a URL)."""
        self.require_tenant_access(by, slug, admin=True, vendor_roles=("vendor_admin", "support"))
        tenant = self.tenant_row(session, slug)
        found = []
        if username is not None:
            row = self.find_user(session, tenant.id, username)
            found += [row] if row is not None else []
        if email is not None:
            found += [
                r
                for r in self.users_by_email(session, normalise_email(email), tenant.id)
                if r.id not in {f.id for f in found}
            ]
        return [self.user_view(session, r, slug) for r in found]

    def users_by_email(self, session: Session, email: str, tenant_id: str | None):
        query = select(users).where(users.c.email_idx == self.index.of("email", email))
        if tenant_id is not None:
            query = query.where(users.c.tenant_id == tenant_id)
        rows = session.execute(query).all()
        return [r for r in rows if self.vault.decrypt(session, "users", "email", r.id, r.email) == email]

    def update_user(
        self, session: Session, by: Principal | None, slug: str, user_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        row = self.user_row(session, tenant.id, user_id, lock=True)
        subject, resource = user_subject(user_id), {"type": "user", "id": user_id}
        now = self.now()
        fields = []
        if "display_name" in changes or "email" in changes:
            current_name = self.vault.decrypt(session, "users", "display_name", user_id, row.display_name)
            current_email = self.vault.decrypt(session, "users", "email", user_id, row.email)
            name = changes.get("display_name", current_name)
            email = changes.get("email", current_email)
            name = None if name is ERASED else name
            email = None if email is ERASED else email
            new_email = normalise_email(email) if email else None
            fields = [
                f
                for f, before, after in (
                    ("display_name", current_name, (name or "").strip() or None),
                    ("email", current_email, new_email),
                )
                if before != after
            ]
            if fields:
                session.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(updated_at=now, **self._personal(session, user_id, name, new_email))
                )
                self.emit(
                    session,
                    events.USER_UPDATED,
                    by,
                    {"user_id": user_id, "fields": fields},
                    tenant=slug,
                    subject=subject,
                    resource=resource,
                )
        status = changes.get("status")
        if status is not None and status != row.status:
            self.set_status(session, by, slug, row, status, reason="admin")
        return self.user_view(session, self.user_row(session, tenant.id, user_id), slug)

    def set_status(self, session: Session, by: Principal | None, slug: str, row, status: str, *, reason: str) -> None:
        subject, resource = user_subject(row.id), {"type": "user", "id": row.id}
        session.execute(update(users).where(users.c.id == row.id).values(status=status, updated_at=self.now()))
        if status == "disabled":
            self.emit(
                session,
                events.USER_DISABLED,
                by,
                {"user_id": row.id, "reason": reason},
                tenant=slug,
                subject=subject,
                resource=resource,
            )
            self.revoke_sessions(session, by, slug, row.id, "user_disabled")
        else:
            self.emit(
                session, events.USER_ENABLED, by, {"user_id": row.id}, tenant=slug, subject=subject, resource=resource
            )

    def revoke_sessions(
        self,
        session: Session,
        by: Principal | None,
        slug: str | None,
        user_id: str,
        reason: str,
        family_id: str | None = None,
        actor: dict[str, Any] | None | object = FROM_CALLER,
        *,
        keep_family: str | None = None,
    ) -> int:
        """Revoke the user's live sessions (one family, or all but ``keep_family``): their refresh tokens,
        and the access tokens issued with them that are still in date.  One event per session."""
        t = refresh_tokens
        query = select(t.c.family_id).where(t.c.user_id == user_id, t.c.revoked_at.is_(None)).distinct()
        if family_id is not None:
            query = query.where(t.c.family_id == family_id)
        if keep_family is not None:
            query = query.where(t.c.family_id != keep_family)
        families = list(session.scalars(query))
        if not families:
            return 0
        now = self.now()
        session.execute(
            update(t)
            .where(t.c.family_id.in_(families), t.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        # Every refresh issued an access token; those issued within one lifetime may still be in use.
        issued = session.execute(
            select(t.c.access_jti, t.c.created_at).where(
                t.c.family_id.in_(families),
                t.c.access_jti.is_not(None),
                t.c.created_at > now - timedelta(seconds=self.policy.access_ttl + REVOCATION_MARGIN),
            )
        ).all()
        self.revoke_access_tokens(
            session, [(r.access_jti, as_utc(r.created_at) + timedelta(seconds=self.policy.access_ttl)) for r in issued]
        )
        for family in sorted(families):
            self.emit(
                session,
                events.SESSION_REVOKED,
                by,
                {"user_id": user_id, "session_id": family, "reason": reason},
                tenant=slug,
                subject=user_subject(user_id),
                resource={"type": "user", "id": user_id},
                actor=actor,
            )
        return len(families)

    # --- access-token revocation (docs/auth.md "Revocation") ---------------------------------------

    def revoke_access_tokens(self, session: Session, tokens: Iterable[tuple[str, datetime]]) -> None:
        """Record revoked access tokens (jti, expiry) until they would have expired anyway (and a margin)."""
        wanted = {jti: expires for jti, expires in tokens if jti}
        if not wanted:
            return
        known = set(session.scalars(select(revoked_tokens.c.jti).where(revoked_tokens.c.jti.in_(list(wanted)))))
        fresh = [
            {"jti": jti, "expires_at": expires + timedelta(seconds=REVOCATION_MARGIN)}
            for jti, expires in wanted.items()
            if jti not in known
        ]
        if fresh:
            session.execute(revoked_tokens.insert(), fresh)

    def revocation_list(self) -> dict[str, Any]:
        """What every verifier reads (``/.well-known/revocations.json``): the revoked jti still in date."""
        with self.db.transaction() as session:
            jtis = sorted(session.scalars(select(revoked_tokens.c.jti).where(revoked_tokens.c.expires_at > self.now())))
        return {"jti": jtis}

    def session_of(self, session: Session, by: Principal | None) -> str | None:
        """The session (refresh-token family) the caller's access token was issued with, if any."""
        if by is None or not by.token_id:
            return None
        return session.scalar(select(refresh_tokens.c.family_id).where(refresh_tokens.c.access_jti == by.token_id))

    def delete_user(
        self, session: Session, by: Principal | None, slug: str, user_id: str, *, reason: str = "admin"
    ) -> None:
        """Delete the account: shred its data key (every copy becomes unreadable), then its rows."""
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        row = self.user_row(session, tenant.id, user_id, lock=True)
        self.remove_user(session, by, slug, row, reason=reason)

    def remove_user(
        self,
        session: Session,
        by: Principal | None,
        slug: str | None,
        row,
        *,
        reason: str,
        actor: dict[str, Any] | None | object = FROM_CALLER,
    ) -> dict[str, int]:
        subject, resource = user_subject(row.id), {"type": "user", "id": row.id}
        counts = {}
        if row.status != "disabled":
            session.execute(update(users).where(users.c.id == row.id).values(status="disabled"))
            self.emit(
                session,
                events.USER_DISABLED,
                by,
                {"user_id": row.id, "reason": reason},
                tenant=slug,
                subject=subject,
                resource=resource,
                actor=actor,
            )
        self.revoke_sessions(session, by, slug, row.id, "user_disabled", actor=actor)
        counts["session"] = session.execute(delete(refresh_tokens).where(refresh_tokens.c.user_id == row.id)).rowcount
        # Login history keeps what security statistics need (time, outcome) without the person.
        counts["login_history"] = session.execute(
            update(login_history).where(login_history.c.user_id == row.id).values(user_id=None, client=None)
        ).rowcount
        self.vault.shred(session, subject)
        session.execute(delete(user_roles).where(user_roles.c.user_id == row.id))
        counts["user_account"] = session.execute(delete(users).where(users.c.id == row.id)).rowcount
        self.emit(
            session,
            events.USER_DELETED,
            by,
            {"user_id": row.id, "reason": reason},
            tenant=slug,
            subject=subject,
            resource=resource,
            actor=actor,
        )
        return counts

    def grant_role(self, session: Session, by: Principal | None, slug: str, user_id: str, role: str) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        row = self.user_row(session, tenant.id, user_id, lock=True)
        (role,) = self.check_roles(tenant, [role], by, field="role")
        existing = session.execute(
            select(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role == role)
        ).first()
        if existing is None:
            session.execute(
                user_roles.insert().values(user_id=user_id, role=role, source="manual", granted_at=self.now())
            )
        elif existing.source == "directory":
            # Granted by hand as well: it now survives the directory no longer mapping it.
            session.execute(
                update(user_roles)
                .where(user_roles.c.user_id == user_id, user_roles.c.role == role)
                .values(source="manual")
            )
        if existing is None or existing.source == "directory":
            self.emit(
                session,
                events.ROLE_GRANTED,
                by,
                {"user_id": user_id, "role": role, "source": "manual"},
                tenant=slug,
                subject=user_subject(user_id),
                resource={"type": "user", "id": user_id},
            )
        return self.user_view(session, self.user_row(session, tenant.id, row.id), slug)

    def revoke_role(self, session: Session, by: Principal | None, slug: str, user_id: str, role: str) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        self.user_row(session, tenant.id, user_id, lock=True)
        self.check_roles(tenant, [role], by, field="role")
        existing = session.execute(
            select(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role == role)
        ).first()
        if existing is None:
            raise NotFound("the user does not have this role")
        session.execute(delete(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role == role))
        self.emit(
            session,
            events.ROLE_REVOKED,
            by,
            {"user_id": user_id, "role": role, "source": existing.source},
            tenant=slug,
            subject=user_subject(user_id),
            resource={"type": "user", "id": user_id},
        )
        return self.user_view(session, self.user_row(session, tenant.id, user_id), slug)

    def set_password(
        self,
        session: Session,
        by: Principal | None,
        slug: str,
        user_id: str,
        password: str,
        *,
        changed_by: str = "admin",
    ) -> None:
        if changed_by == "admin":
            self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        row = self.user_row(session, tenant.id, user_id, lock=True)
        if row.source != "local":
            raise Conflict("directory users change their password in the directory")
        session.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=self.hasher.hash(password), updated_at=self.now())
        )
        self.emit(
            session,
            events.PASSWORD_CHANGED,
            by,
            {"user_id": user_id, "by": changed_by},
            tenant=slug,
            subject=user_subject(user_id),
            resource={"type": "user", "id": user_id},
        )
        # Whoever knew the old password may hold a session: end them all, except (for a change by the
        # user) the session that made the change, which has just proved it knows both passwords.
        keep = self.session_of(session, by) if changed_by == "self" else None
        self.revoke_sessions(session, by, slug, user_id, "password_changed", keep_family=keep)

    def unlock(self, session: Session, by: Principal | None, slug: str, user_id: str) -> dict[str, Any]:
        self.require_tenant_access(by, slug, admin=True)
        tenant = self.tenant_row(session, slug)
        self.user_row(session, tenant.id, user_id, lock=True)
        session.execute(update(users).where(users.c.id == user_id).values(failed_count=0, locked_until=None))
        self.emit(
            session,
            events.ACCOUNT_UNLOCKED,
            by,
            {"user_id": user_id},
            tenant=slug,
            subject=user_subject(user_id),
            resource={"type": "user", "id": user_id},
        )
        return self.user_view(session, self.user_row(session, tenant.id, user_id), slug)

    def sync_directory_user(
        self,
        session: Session,
        slug: str,
        row,
        *,
        display_name: str | None,
        email: str | None,
        groups: Iterable[str],
        roles: Iterable[str],
        actor: dict[str, Any],
    ) -> None:
        """Bring a directory user's minimal fields and directory-mapped roles in line with the directory."""
        user_id, subject = row.id, user_subject(row.id)
        resource = {"type": "user", "id": user_id}
        groups = sorted(set(groups))
        try:
            email = normalise_email(email) if email else None
        except Invalid:
            email = None  # a directory's malformed mail attribute is not the person's fault
        current = {
            "display_name": self.vault.decrypt(session, "users", "display_name", user_id, row.display_name),
            "email": self.vault.decrypt(session, "users", "email", user_id, row.email),
            "groups": self.groups_of(session, row),
        }
        changed = [
            f for f, v in (("display_name", display_name), ("email", email), ("groups", groups)) if current[f] != v
        ]
        if changed:
            values = self._personal(session, user_id, display_name, email)
            values["groups"] = self.vault.encrypt(session, subject, "users", "groups", user_id, json.dumps(groups))
            session.execute(update(users).where(users.c.id == user_id).values(updated_at=self.now(), **values))
            self.emit(
                session,
                events.USER_UPDATED,
                None,
                {"user_id": user_id, "fields": changed},
                tenant=slug,
                subject=subject,
                resource=resource,
                actor=actor,
            )
        held = {r.role: r.source for r in session.execute(select(user_roles).where(user_roles.c.user_id == user_id))}
        wanted = set(roles)
        for role in sorted(wanted - set(held)):
            session.execute(
                user_roles.insert().values(user_id=user_id, role=role, source="directory", granted_at=self.now())
            )
            self.emit(
                session,
                events.ROLE_GRANTED,
                None,
                {"user_id": user_id, "role": role, "source": "directory"},
                tenant=slug,
                subject=subject,
                resource=resource,
                actor=actor,
            )
        for role, source in sorted(held.items()):
            if source == "directory" and role not in wanted:
                session.execute(delete(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role == role))
                self.emit(
                    session,
                    events.ROLE_REVOKED,
                    None,
                    {"user_id": user_id, "role": role, "source": "directory"},
                    tenant=slug,
                    subject=subject,
                    resource=resource,
                    actor=actor,
                )
