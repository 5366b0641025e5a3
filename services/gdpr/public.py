"""Requests from the public page (issue 17): a person asks for an export or an erasure without a staff
account, proves they hold the address with a one-time code, and only then is a request opened.

- ``POST /api/v1/public/verifications`` takes what the person asks for, sends a six-digit code by
  e-mail (or SMS through the pluggable sender) and stores only an HMAC of the code and the draft
  request, Vault-encrypted under ``gdpr:verification:<id>``.  When the relay cannot take the code at
  once, the answer is the same and the worker's notice loop sends it (the code waits Vault-encrypted).  The answer is the same whether or not
  the vendor has ever heard of the address: nothing is looked up.
- ``POST /api/v1/public/verifications/{id}/confirm`` with the right code opens the request
  (``Coordinator.open``) and records how to reach the person (``public_requests``); a wrong code
  counts an attempt, the last allowed attempt, an expired or a used code are all 410.
- Both are rate-limited per address and per client IP (fixed windows in ``public_limits``, keys are
  HMACs); every limit answers the same 429 problem with Retry-After.

A request naming a customer (a municipality or care provider, setting PUBLIC_CUSTOMERS) is opened in
that customer's tenant with ``customer_must_confirm`` set: the vendor is the customer's processor
there, so the customer's privacy officer confirms it before it runs (docs/gdpr.md "Public requests").
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import ipaddress
import json
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app, jsonify, request
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared import mail
from shared.clock import as_utc, rfc3339, utcnow
from shared.config import secret_value
from shared.errors import Gone, Invalid, TooManyRequests
from shared.http import ApiBlueprint, runtime
from shared.inputs import EMAIL, PHONE
from shared.normalise import normalise_email, normalise_phone

from .controller import DataSubject
from .domain import TYPES
from .models import public_limits, public_requests, public_verifications
from .texts import LANGUAGES, render

log = logging.getLogger(__name__)

CODE_DIGITS = 6
PUBLIC_ACTOR_ID = "public-page"
SCOPES = ("vendor", "customer")
CHANNELS = ("email", "sms")
_GONE = "this code has expired or was already used; ask for a new code"
_BUSY = "too many requests from this address or network; try again later"


def derive_key(index_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"recept.gdpr." + purpose).derive(index_key)


def new_code() -> str:
    """A uniformly random six-digit code (leading zeros kept)."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(key: bytes, verification_id: str, code: str) -> str:
    """HMAC-SHA256 of the code bound to its verification: a leaked table reveals no code."""
    return hmac.new(key, f"{verification_id}:{code}".encode(), hashlib.sha256).hexdigest()


def contact_hash(key: bytes, contact: dict[str, str]) -> str:
    """Keyed hash of the contact details: proves whom an answer went to after the details are shredded."""
    text = json.dumps(contact, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def verification_subject(verification_id: str) -> str:
    return f"gdpr:verification:{verification_id}"


def contact_subject(request_id: str) -> str:
    return f"gdpr:contact:{request_id}"


# --- rate limits --------------------------------------------------------------------------------


class RateLimiter:
    """Fixed-window counters in the database, shared by every api process.  Keys are HMACs, so the
    table holds no address; a refused call changes nothing (its transaction is rolled back)."""

    def __init__(self, key: bytes, window: float, clock=utcnow) -> None:
        self.key = key
        self.window = timedelta(seconds=window)
        self.clock = clock

    def bucket(self, kind: str, value: str) -> str:
        return f"{kind}:" + hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:64]

    def hit(self, s: Session, kind: str, value: str, limit: int, now: datetime | None = None) -> None:
        """Count one call; TooManyRequests (429) when ``limit`` calls were already made in this window."""
        now = now or self.clock()
        key = self.bucket(kind, value)
        # Insert-if-absent first, so two first calls at once both end on the locked row (no duplicate key).
        dialect = s.get_bind().dialect.name
        module = postgresql if dialect == "postgresql" else sqlite if dialect == "sqlite" else None
        fresh = {"key": key, "window_start": now, "count": 0}
        if module is not None:
            s.execute(module.insert(public_limits).values(**fresh).on_conflict_do_nothing())
        elif s.scalar(select(public_limits.c.key).where(public_limits.c.key == key)) is None:
            s.execute(public_limits.insert().values(**fresh))
        row = s.execute(select(public_limits).where(public_limits.c.key == key).with_for_update()).one()
        start = as_utc(row.window_start)
        if now >= start + self.window:
            s.execute(update(public_limits).where(public_limits.c.key == key).values(window_start=now, count=1))
            return
        if row.count >= limit:
            retry = max(1, int((start + self.window - now).total_seconds()) + 1)
            raise TooManyRequests(_BUSY, headers={"Retry-After": str(retry)})
        s.execute(update(public_limits).where(public_limits.c.key == key).values(count=public_limits.c.count + 1))


# --- senders ------------------------------------------------------------------------------------


class SmsUnavailable(Exception):
    """No SMS sender is configured."""


def load_sms_sender(config):
    """The SMS sender named by SMS_SENDER (``module:factory``, called with the config), or None."""
    name = config.get("SMS_SENDER")
    if not name:
        return None
    module, _, attribute = name.partition(":")
    factory = getattr(importlib.import_module(module), attribute or "create")
    return factory(config)


@dataclass
class Senders:
    """How codes and notices leave the service: SMTP for e-mail, the pluggable sender for SMS."""

    config: Any
    sms: Any = None
    relay: mail.SmtpRelay = field(init=False)

    def __post_init__(self) -> None:
        self.relay = mail.SmtpRelay(self.config)

    def send(self, channel: str, to: str, subject: str, body: str, headers: dict[str, str] | None = None) -> None:
        """Send one message; raises OSError / smtplib.SMTPException / SmsUnavailable / the sender's error."""
        if channel == "sms":
            if self.sms is None:
                raise SmsUnavailable("no SMS sender configured")
            self.sms.send(to, f"{subject}: {body}")
            return
        self.relay.send(mail.message(self.config["SMTP_FROM"], to, subject, body, headers), to)


# --- the public side of requests ----------------------------------------------------------------


def customers(config) -> list[dict[str, str]]:
    """The customers a person may name (setting PUBLIC_CUSTOMERS, ``slug=Display name``)."""
    out = []
    for entry in config.get("PUBLIC_CUSTOMERS") or ():
        slug, _, name = str(entry).partition("=")
        if slug.strip():
            out.append({"slug": slug.strip(), "name": (name or slug).strip()})
    return out


class PublicRequests:
    def __init__(self, *, db, vault, coordinator, config, index_key: bytes, senders: Senders, clock=utcnow) -> None:
        self.db = db
        self.vault = vault
        self.coordinator = coordinator
        self.config = config
        self.senders = senders
        self.clock = clock
        self.code_key = derive_key(index_key, b"public-code.v1")
        self.contact_key = derive_key(index_key, b"public-contact.v1")
        self.limits = RateLimiter(derive_key(index_key, b"public-limit.v1"), float(config["PUBLIC_WINDOW"]), clock)

    # -- step 1: ask ----------------------------------------------------------------------------

    def start(self, body: dict[str, Any], client: str, now: datetime | None = None) -> dict[str, Any]:
        now = now or self.clock()
        draft = self._draft(body)
        channel = draft["channel"]
        verification_id = str(uuid.uuid4())
        code = new_code()
        expires = now + timedelta(seconds=float(self.config["CODE_TTL"]))
        with self.db.transaction() as s:
            self.limits.hit(s, "client", client, int(self.config["PUBLIC_PER_CLIENT"]), now)
            for kind, value in draft["contact"].items():
                self.limits.hit(s, kind, value, int(self.config["PUBLIC_PER_ADDRESS"]), now)
            s.execute(
                public_verifications.insert().values(
                    id=verification_id,
                    code_hash=code_hash(self.code_key, verification_id, code),
                    draft=self.vault.encrypt(
                        s,
                        verification_subject(verification_id),
                        "public_verifications",
                        "draft",
                        verification_id,
                        json.dumps(draft),
                    ),
                    channel=channel,
                    attempts=0,
                    created_at=now,
                    expires_at=expires,
                )
            )
            if not self._send_code(draft, code):
                # The relay is down: the answer stays the same (202, no 5xx) and the notice loop sends
                # the code, kept Vault-encrypted until then (send_unsent_codes).
                s.execute(
                    update(public_verifications)
                    .where(public_verifications.c.id == verification_id)
                    .values(
                        unsent_code=self.vault.encrypt(
                            s,
                            verification_subject(verification_id),
                            "public_verifications",
                            "unsent_code",
                            verification_id,
                            code,
                        )
                    )
                )
        return {"verification_id": verification_id, "channel": channel, "expires_at": rfc3339(expires)}

    def _send_code(self, draft: dict[str, Any], code: str) -> bool:
        channel = draft["channel"]
        address = draft["contact"]["phone"] if channel == "sms" else draft["contact"]["email"]
        minutes = max(1, int(float(self.config["CODE_TTL"]) // 60))
        subject, text = render("code", draft["language"], code=code, minutes=minutes)
        try:
            self.senders.send(channel, address, subject, text)
        except Exception as exc:  # noqa: BLE001 - a relay or a plugged-in SMS sender failing: retried later
            log.warning("a verification code could not be sent yet (%s)", mail.reason(exc))
            return False
        return True

    def send_unsent_codes(self, now: datetime | None = None) -> int:
        """Send the codes the relay could not take at once (while they are valid); the number sent."""
        now = now or self.clock()
        v = public_verifications
        with self.db.transaction() as s:
            ids = s.scalars(
                select(v.c.id).where(v.c.unsent_code.is_not(None), v.c.used_at.is_(None), v.c.expires_at > now)
            ).all()
        sent = 0
        for verification_id in ids:
            with self.db.transaction() as s:
                row = s.execute(select(v).where(v.c.id == verification_id).with_for_update()).first()
                if row is None or row.unsent_code is None:
                    continue
                draft = self.vault.decrypt(s, "public_verifications", "draft", row.id, row.draft)
                code = self.vault.decrypt(s, "public_verifications", "unsent_code", row.id, row.unsent_code)
                if not (isinstance(draft, str) and isinstance(code, str)):
                    continue
                if self._send_code(json.loads(draft), code):
                    s.execute(update(v).where(v.c.id == row.id).values(unsent_code=None))
                    sent += 1
        return sent

    def _draft(self, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        contact: dict[str, str] = {}
        try:
            contact["email"] = normalise_email(body["email"])
        except Invalid as exc:
            errors += exc.errors or [{"field": "email", "message": "is not an e-mail address"}]
        if body.get("phone"):
            try:
                contact["phone"] = normalise_phone(body["phone"])
            except Invalid as exc:
                errors += exc.errors or [{"field": "phone", "message": "is not a phone number"}]
        scope = body.get("scope", "vendor")
        customer = body.get("customer")
        known = {c["slug"] for c in customers(self.config)}
        if scope == "customer" and customer not in known:
            errors.append({"field": "customer", "message": "name one of the customers listed on the page"})
        if scope == "vendor" and customer:
            errors.append({"field": "customer", "message": "only with scope customer"})
        channel = body.get("channel", "email")
        if channel == "sms" and "phone" not in contact:
            errors.append({"field": "phone", "message": "is needed to send the code by SMS"})
        if channel == "sms" and self.senders.sms is None:
            errors.append({"field": "channel", "message": "SMS is not offered here; choose e-mail"})
        if errors:
            raise Invalid("the request cannot be sent as it is", errors=errors)
        return {
            "type": body["type"],
            "scope": scope,
            "customer": customer if scope == "customer" else None,
            "contact": contact,
            "channel": channel,
            "language": body.get("language", "en"),
        }

    # -- step 2: prove --------------------------------------------------------------------------

    def confirm(self, verification_id: str, code: str, client: str, now: datetime | None = None) -> dict[str, Any]:
        now = now or self.clock()
        try:
            uuid.UUID(verification_id)
        except ValueError:
            raise Gone(_GONE) from None
        max_attempts = int(self.config["CODE_ATTEMPTS"])
        wrong, left = False, 0
        with self.db.transaction() as s:
            self.limits.hit(s, "client", client, int(self.config["PUBLIC_PER_CLIENT"]), now)
            row = s.execute(
                select(public_verifications).where(public_verifications.c.id == verification_id).with_for_update()
            ).first()
            if row is None or row.used_at is not None or row.attempts >= max_attempts or as_utc(row.expires_at) <= now:
                raise Gone(_GONE)
            if not hmac.compare_digest(row.code_hash, code_hash(self.code_key, verification_id, code)):
                # Counted in this transaction, which commits: the 422 is raised after it.
                s.execute(
                    update(public_verifications)
                    .where(public_verifications.c.id == verification_id)
                    .values(attempts=public_verifications.c.attempts + 1)
                )
                wrong = True
                left = max_attempts - row.attempts - 1
            else:
                text = self.vault.decrypt(s, "public_verifications", "draft", verification_id, row.draft)
                if not isinstance(text, str):
                    raise Gone(_GONE)
                opened = self._open(s, json.loads(text), row.channel, now)
                s.execute(
                    update(public_verifications)
                    .where(public_verifications.c.id == verification_id)
                    .values(used_at=now, request_id=opened["request_id"])
                )
                # The draft's copy of the contact details is no longer needed.
                self.vault.shred(s, verification_subject(verification_id))
        if wrong:
            if left <= 0:
                raise Gone(_GONE)
            raise Invalid(
                "the code is not right",
                errors=[{"field": "code", "message": f"is not the code we sent ({left} attempts left)"}],
            )
        return opened

    def _open(self, s: Session, draft: dict[str, Any], channel: str, now: datetime) -> dict[str, Any]:
        c = self.coordinator
        vendor = (c.policy.vendor_tenants or ("vendor",))[0]
        tenant = draft["customer"] if draft["scope"] == "customer" else vendor
        contact = draft["contact"]
        created = c.open(
            s,
            DataSubject(tenant=vendor, user_id=PUBLIC_ACTOR_ID),
            type_=draft["type"],
            tenant=tenant,
            subject=dict(contact),
            reason=None,
            now=now,
        )
        request_id = created["id"]
        s.execute(
            public_requests.insert().values(
                request_id=request_id,
                origin="public",
                scope=draft["scope"],
                customer_must_confirm=draft["scope"] == "customer",
                language=draft["language"],
                contact=self.vault.encrypt(
                    s, contact_subject(request_id), "public_requests", "contact", request_id, json.dumps(contact)
                ),
                contact_hash=contact_hash(self.contact_key, contact),
                verified_channel=channel,
                created_at=now,
            )
        )
        return {
            "request_id": request_id,
            "type": created["type"],
            "status": created["status"],
            "due_at": created["due_at"],
            "origin": "public",
            "customer_must_confirm": draft["scope"] == "customer",
        }

    def prune(self, s: Session, now: datetime | None = None) -> int:
        """Forget verifications that expired a day ago (their drafts are shredded with them)."""
        now = now or self.clock()
        old = s.scalars(
            select(public_verifications.c.id).where(public_verifications.c.expires_at < now - timedelta(days=1))
        ).all()
        for verification_id in old:
            self.vault.shred(s, verification_subject(verification_id))
        if old:
            s.execute(public_verifications.delete().where(public_verifications.c.id.in_(old)))
        return len(old)


def client_address(config) -> str:
    """The caller's IP, or the browser's when the portal forwards it with the shared token."""
    peer = request.remote_addr or "unknown"
    token = secret_value(config, "FORWARDING_TOKEN")
    forwarded = request.headers.get("X-Recept-Client-Address")
    presented = request.headers.get("X-Recept-Forwarding-Token")
    if not (token and forwarded and presented and hmac.compare_digest(presented.encode(), token.encode())):
        return peer
    try:
        return str(ipaddress.ip_address(forwarded.strip()))
    except ValueError:
        return peer


# --- HTTP ---------------------------------------------------------------------------------------

bp = ApiBlueprint("gdpr_public", __name__)

_SLUG = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,99}$"}
START = {
    "type": "object",
    "required": ["type", "email"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(TYPES)},
        "scope": {"enum": list(SCOPES)},
        "customer": _SLUG,
        "email": EMAIL,
        "phone": PHONE,
        "channel": {"enum": list(CHANNELS)},
        "language": {"enum": list(LANGUAGES)},
    },
    "allOf": [
        # A customer is named with scope customer, and only then.
        {
            "if": {"required": ["scope"], "properties": {"scope": {"const": "customer"}}},
            "then": {"required": ["customer"]},
            "else": {"not": {"required": ["customer"]}},
        },
        # A code by SMS needs the number to send it to.
        {"if": {"required": ["channel"], "properties": {"channel": {"const": "sms"}}}, "then": {"required": ["phone"]}},
    ],
}
CONFIRM = {
    "type": "object",
    "required": ["code"],
    "additionalProperties": False,
    "properties": {"code": {"type": "string", "pattern": r"^\d{6}$"}},
}
_STARTED = {
    "type": "object",
    "required": ["verification_id", "channel", "expires_at"],
    "properties": {
        "verification_id": {"type": "string"},
        "channel": {"enum": list(CHANNELS)},
        "expires_at": {"type": "string"},
    },
}
_OPENED = {
    "type": "object",
    "required": ["request_id", "type", "status", "due_at", "origin", "customer_must_confirm"],
    "properties": {
        "request_id": {"type": "string"},
        "type": {"enum": list(TYPES)},
        "status": {"type": "string"},
        "due_at": {"type": "string"},
        "origin": {"enum": ["public"]},
        "customer_must_confirm": {"type": "boolean"},
    },
}
_CUSTOMERS = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "required": ["slug", "name"], "properties": {"slug": {}, "name": {}}},
        },
        "sms": {"type": "boolean"},
    },
}


def _public() -> PublicRequests:
    return current_app.extensions["gdpr_public"]


@bp.operation(
    "GET",
    "/api/v1/public/customers",
    summary="The customers a person may name on the public request page, and whether SMS is offered",
    public=True,
    tags=("public",),
    responses={200: _CUSTOMERS},
)
def list_customers():
    p = _public()
    return jsonify({"items": customers(p.config), "sms": p.senders.sms is not None})


@bp.operation(
    "POST",
    "/api/v1/public/verifications",
    summary="Ask for an export or erasure: sends a one-time code (the same answer for any address)",
    body=START,
    public=True,
    tags=("public",),
    responses={202: _STARTED, 422: None, 429: None},
)
def start_verification(body):
    p = _public()
    started = p.start(body, client_address(runtime().config))
    response = jsonify(started)
    response.status_code = 202
    return response


@bp.operation(
    "POST",
    "/api/v1/public/verifications/{verification_id}/confirm",
    summary="Confirm the one-time code: opens the request",
    body=CONFIRM,
    public=True,
    tags=("public",),
    responses={201: _OPENED, 410: None, 422: None, 429: None},
)
def confirm_verification(verification_id, body):
    p = _public()
    opened = p.confirm(verification_id, body["code"], client_address(runtime().config))
    response = jsonify(opened)
    response.status_code = 201
    return response
