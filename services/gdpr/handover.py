"""Secure hand-over of an export to the person who asked for it on the public page (issue 17).

When a public export completes, the package is encrypted to a random passphrase (format below) and
stored Vault-encrypted under ``gdpr:export:<id>`` beside the package, so the package's expiry shreds
both.  The person gets a one-time link by e-mail (a random token; only its SHA-256 is stored) and the
passphrase by a second message (SMS when they gave a number, else a separate e-mail).  The first
download hands the file over and deletes it; a second is 410, as is an expired link.

Package format ``RCPTPKG1`` (decrypt with ``./recept gdpr decrypt-package``)::

    magic     8 bytes   b"RCPTPKG1"
    log2 N    1 byte    scrypt cost (15: N = 32768)
    r, p      1 byte each  scrypt block size (8) and parallelism (1)
    salt      16 bytes  scrypt salt
    nonce     12 bytes  AES-GCM nonce
    body      rest      AES-256-GCM ciphertext of the ZIP, 16-byte tag at the end;
                        the 39 header bytes are the associated data

key = scrypt(passphrase as UTF-8, salt, N, r, p, length 32).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from flask import Response, current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.clock import as_utc, utcnow
from shared.crypto import ERASED
from shared.errors import Gone, Invalid, NotFound
from shared.http import ApiBlueprint, runtime

from . import events as ev
from .domain import export_subject, request_subject
from .models import export_packages, handovers, requests

MAGIC = b"RCPTPKG1"
LOG2_N, R, P = 15, 8, 1
_HEADER = struct.Struct(">8sBBB16s12s")


def new_passphrase() -> str:
    """120 random bits as six groups of four base32 letters (easy to type from an SMS)."""
    text = base64.b32encode(secrets.token_bytes(15)).decode()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase.strip().encode())


def encrypt_package(data: bytes, passphrase: str) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(MAGIC, LOG2_N, R, P, salt, nonce)
    return header + AESGCM(_key(passphrase, salt, LOG2_N, R, P)).encrypt(nonce, data, header)


def decrypt_package(blob: bytes, passphrase: str) -> bytes:
    """The ZIP inside; ValueError when the file is not a package or the passphrase is wrong."""
    if len(blob) < _HEADER.size + 16 or blob[:8] != MAGIC:
        raise ValueError("not a Recept export package")
    _magic, log2_n, r, p, salt, nonce = _HEADER.unpack(blob[: _HEADER.size])
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("the package's key parameters are out of range")
    try:
        return AESGCM(_key(passphrase, salt, log2_n, r, p)).decrypt(nonce, blob[_HEADER.size :], blob[: _HEADER.size])
    except InvalidTag:
        raise ValueError("wrong passphrase, or the file was changed") from None


class Handovers:
    def __init__(self, *, vault, outbox, ttl: float, clock=utcnow) -> None:
        self.vault = vault
        self.outbox = outbox
        self.ttl = timedelta(seconds=ttl)
        self.clock = clock

    def prepare(self, s: Session, request_id: str, now: datetime | None = None) -> tuple[str, str, datetime] | None:
        """(token, passphrase, expiry) of a new hand-over of the request's package; None without a package."""
        now = now or self.clock()
        pkg = s.execute(select(export_packages).where(export_packages.c.request_id == request_id)).first()
        if pkg is None or pkg.package is None:
            return None
        data = self.vault.decrypt(s, "export_packages", "package", request_id, pkg.package)
        if data is ERASED or data is None:
            return None
        token, passphrase = new_token(), new_passphrase()
        expires = min(now + self.ttl, as_utc(pkg.expires_at))
        sealed = encrypt_package(bytes(data), passphrase)
        s.execute(handovers.delete().where(handovers.c.request_id == request_id))
        s.execute(
            handovers.insert().values(
                request_id=request_id,
                token_hash=token_hash(token),
                package=self.vault.encrypt(s, export_subject(request_id), "handovers", "package", request_id, sealed),
                created_at=now,
                expires_at=expires,
            )
        )
        return token, passphrase, expires

    def download(self, s: Session, token: str, now: datetime | None = None) -> tuple[bytes, str]:
        """The encrypted package, once: the first download deletes it; later ones are 410."""
        now = now or self.clock()
        row = s.execute(select(handovers).where(handovers.c.token_hash == token_hash(token)).with_for_update()).first()
        if row is None:
            raise NotFound("no such download link")
        if row.downloaded_at is not None:
            raise Gone("this link was already used: the package can be downloaded only once")
        if row.package is None or as_utc(row.expires_at) <= now:
            raise Gone("this link has expired and the package was deleted")
        data = self.vault.decrypt(s, "handovers", "package", row.request_id, row.package)
        if data is ERASED or data is None:
            raise Gone("this link has expired and the package was deleted")
        s.execute(
            update(handovers)
            .where(handovers.c.request_id == row.request_id)
            .values(downloaded_at=now, package=None, deleted_at=now)
        )
        s.execute(
            update(export_packages)
            .where(export_packages.c.request_id == row.request_id)
            .values(downloads=export_packages.c.downloads + 1)
        )
        tenant = s.scalar(select(requests.c.tenant).where(requests.c.id == row.request_id))
        blob = bytes(data)
        self.outbox.emit(
            s,
            ev.EXPORT_DOWNLOADED,
            data={"request_id": row.request_id, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)},
            actor={"id": "public-page", "tenant": None, "kind": "service"},
            tenant=tenant,
            subject=request_subject(row.request_id),
            resource={"type": "gdpr_request", "id": row.request_id},
        )
        return blob, f"recept-export-{row.request_id}.rcpt"

    def expire(self, s: Session, now: datetime | None = None) -> int:
        """Delete hand-overs whose link expired unused."""
        now = now or self.clock()
        result = s.execute(
            update(handovers)
            .where(handovers.c.package.is_not(None), handovers.c.expires_at <= now)
            .values(package=None, deleted_at=now)
        )
        return result.rowcount or 0


# --- HTTP ---------------------------------------------------------------------------------------

bp = ApiBlueprint("gdpr_handover", __name__)

DOWNLOAD = {
    "type": "object",
    "required": ["token"],
    "additionalProperties": False,
    "properties": {"token": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{20,100}$"}},
}


@bp.operation(
    "POST",
    "/api/v1/public/downloads",
    summary="Download an export once with the token of its link (the file is encrypted to a passphrase)",
    body=DOWNLOAD,
    public=True,
    tags=("public",),
    responses={
        200: {
            "description": "the encrypted package (format RCPTPKG1, docs/gdpr.md)",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                }
            },
        },
        404: None,
        410: None,
        429: None,
    },
    content_type="application/octet-stream",
)
def download(body):
    from .public import client_address

    public = current_app.extensions["gdpr_public"]
    rt = runtime()
    with rt.db.transaction() as s:
        public.limits.hit(s, "client", client_address(rt.config), int(rt.config["PUBLIC_PER_CLIENT"]))
    with rt.db.transaction() as s:
        data, filename = current_app.extensions["gdpr_handovers"].download(s, body["token"])
    return Response(
        data,
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def decrypt_command(path_in: str, path_out: str, passphrase: str) -> None:
    with open(path_in, "rb") as handle:
        blob = handle.read()
    try:
        data = decrypt_package(blob, passphrase)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    with open(path_out, "wb") as handle:
        handle.write(data)
