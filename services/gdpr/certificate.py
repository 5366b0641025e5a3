"""The erasure certificate (issue 15): what a finished erasure did, signed by the gdpr service and anchored
to the audit checkpoint of its tenant first signed after it finished.

A certificate is ``{"format", "certificate": {...}, "signature": {"algorithm", "key_id", "value"}}``.
The signature (Ed25519) covers ``DOMAIN NUL canonical(certificate)``, where ``canonical`` is
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8.  The signing key is
derived from the keyring's primary index key (HKDF-SHA256, info ``recept.gdpr.certificate.v1``), so every
process of the service has it without a key file; its key id is the first 16 bytes of SHA-256 of the raw
public key, hex (as the audit's checkpoint keys).  The keys derived from the other index keys still
verify, so certificates issued before an index-key rotation stay valid.

Verification needs only the certificate and a public key: ``verify`` here, ``POST
/api/v1/certificates/verify``, and ``./recept gdpr verify-certificate FILE --key PEM`` offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app, jsonify
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.clock import parse_rfc3339
from shared.errors import Conflict, Invalid
from shared.http import ApiBlueprint, authenticate, runtime

from .models import audit_checkpoints, requests

log = logging.getLogger(__name__)

FORMAT = "recept.erasure-certificate.v1"
DOMAIN = b"recept.gdpr.certificate.v1"
ALGORITHM = "Ed25519"
CHECKPOINT_SIGNED = "audit.checkpoint.signed"
CERTIFIED = ("completed", "partially_completed")
TENANT_PREFIX = "tenant:"  # the audit's chain of a tenant (services/audit/domain.py chain_for)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ``Invalid`` when it is not one."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise Invalid("the key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Invalid("the key is not an Ed25519 public key")
    return key


def derive_signing_key(index_key: bytes) -> Ed25519PrivateKey:
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=DOMAIN).derive(index_key)
    return Ed25519PrivateKey.from_private_bytes(seed)


class CertificateKeys:
    """The signing key (from the primary index key) and the public keys of every index key, by key id."""

    def __init__(self, index_keys: Mapping[str, bytes], primary_index_id: str) -> None:
        self._signing = derive_signing_key(index_keys[primary_index_id])
        self.key_id = key_id(self._signing.public_key())
        self.public_keys: dict[str, Ed25519PublicKey] = {}
        for raw in index_keys.values():
            public = derive_signing_key(raw).public_key()
            self.public_keys[key_id(public)] = public

    @classmethod
    def from_keyring(cls, keyring) -> CertificateKeys:
        return cls(keyring.index_keys, keyring.index_primary_id)

    def __repr__(self) -> str:
        return f"CertificateKeys(key_id={self.key_id!r})"

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        value = self._signing.sign(DOMAIN + b"\x00" + canonical(body))
        return {
            "format": FORMAT,
            "certificate": body,
            "signature": {"algorithm": ALGORITHM, "key_id": self.key_id, "value": base64.b64encode(value).decode()},
        }

    def document(self) -> dict[str, Any]:
        """``GET /api/v1/certificates/key``: the current key first, then those still accepted."""
        ordered = [self.key_id, *(k for k in self.public_keys if k != self.key_id)]
        return {
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "keys": [
                {
                    "key_id": kid,
                    "algorithm": ALGORITHM,
                    "current": kid == self.key_id,
                    "pem": public_pem(self.public_keys[kid]),
                }
                for kid in ordered
            ],
        }


def problem(certificate: Any, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when the certificate is well formed and signed by one of ``keys``; else why not."""
    if not isinstance(certificate, dict) or certificate.get("format") != FORMAT:
        return "not an erasure certificate (format)"
    body, signature = certificate.get("certificate"), certificate.get("signature")
    if not isinstance(body, dict) or not isinstance(signature, dict):
        return "malformed: certificate and signature must be objects"
    if set(certificate) != {"format", "certificate", "signature"}:
        return "malformed: unexpected fields beside format, certificate and signature"
    if signature.get("algorithm") != ALGORITHM:
        return f"unsupported signature algorithm (only {ALGORITHM})"
    kid, value = signature.get("key_id"), signature.get("value")
    if not isinstance(kid, str) or not isinstance(value, str):
        return "malformed: signature.key_id and signature.value must be strings"
    key = keys.get(kid)
    if key is None:
        return "signed with an unknown key"
    try:
        key.verify(base64.b64decode(value, validate=True), DOMAIN + b"\x00" + canonical(body))
    except UnicodeEncodeError:
        return "malformed: text that is not valid Unicode"
    except (InvalidSignature, binascii.Error, ValueError):
        return "bad signature: the certificate was changed or signed with another key"
    return None


def keys_of(*public_keys: Ed25519PublicKey) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in public_keys}


def body_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The certified facts of a finished erasure, from its request document (which holds no user id here)."""
    results, retained = [], []
    for row in sorted(document.get("services") or [], key=lambda r: r["service"]):
        items = []
        for item in row.get("erasure") or []:
            entry = {
                "kind": item.get("kind"),
                "action": item.get("action"),
                "count": item.get("count"),
                "legal_basis": item.get("legal_basis"),
                "retain_until": item.get("retain_until"),
            }
            items.append(entry)
            if entry["action"] == "retained":
                retained.append({"service": row["service"], **entry})
        results.append({"service": row["service"], "status": row.get("status"), "erasure": items})
    preview = document.get("preview") or {}
    return {
        "request_id": document["id"],
        "type": document["type"],
        "tenant": document["tenant"],
        "status": document["status"],
        "received_at": document["created_at"],
        "completed_at": document["finished_at"],
        "results": results,
        "retained": retained,
        "instruction": document.get("instruction"),
        "agreement": document.get("agreement"),
        # Both pairs of eyes: who opened the request and who approved (and confirmed) it, by role and tenant.
        "opened_by": document.get("opened_by"),
        "approvals": [
            {"step": a["step"], "role": a["role"], "tenant": a["tenant"], "at": a["at"]}
            for a in document.get("approvals") or []
        ],
        "preview_hash": preview.get("hash") or document.get("preview_hash"),
        "anchor": document.get("anchor"),
    }


def anchored(document: Mapping[str, Any]) -> bool:
    """Whether a finished erasure has its anchor: a checkpoint signed at or after it finished."""
    anchor, finished = document.get("anchor"), document.get("finished_at")
    if document.get("type") != "erase" or document.get("status") not in CERTIFIED or not anchor or not finished:
        return False
    return parse_rfc3339(anchor["signed_at"]) >= parse_rfc3339(finished)


def certificate_for(document: Mapping[str, Any], keys: CertificateKeys) -> dict[str, Any]:
    if document["type"] != "erase":
        raise Conflict("only erasure requests have a certificate")
    if document["status"] not in CERTIFIED:
        raise Conflict(f"the request is {document['status']}: a certificate is issued once it is completed")
    if not anchored(document):
        raise Conflict("not anchored yet: the audit has not signed a checkpoint of the tenant since it finished")
    return keys.sign(body_of(document))


class CheckpointReplica:
    """``audit.checkpoint.signed`` events: keep the latest per tenant, anchor the erasures finished before it."""

    def on_event(self, s: Session, message: dict[str, Any]) -> None:
        if message.get("type") != CHECKPOINT_SIGNED:
            return
        data = message.get("data") or {}
        chain = data.get("chain")
        if not isinstance(chain, str) or not chain.startswith(TENANT_PREFIX):
            return  # the vendor's and the system's tenantless chains anchor no request
        tenant = chain[len(TENANT_PREFIX) :]
        try:
            signed_at: datetime = parse_rfc3339(data["signed_at"])
            anchor = {
                "chain": chain,
                "seq": int(data["seq"]),
                "head_hash": str(data["head_hash"]),
                "key_id": str(data["key_id"]),
                "signature": str(data["signature"]),
                "signed_at": str(data["signed_at"]),
            }
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed audit checkpoint event")
            return
        row = s.execute(
            select(audit_checkpoints.c.seq).where(audit_checkpoints.c.tenant == tenant).with_for_update()
        ).first()
        values = {k: anchor[k] for k in ("chain", "seq", "head_hash", "key_id", "signature")} | {"signed_at": signed_at}
        if row is None:
            s.execute(audit_checkpoints.insert().values(tenant=tenant, **values))
        elif row.seq < anchor["seq"]:
            s.execute(update(audit_checkpoints).where(audit_checkpoints.c.tenant == tenant).values(**values))
        # The first checkpoint signed after an erasure finished anchors it (a retried request that finished
        # again after its anchor waits for the next one).
        s.execute(
            update(requests)
            .where(
                requests.c.tenant == tenant,
                requests.c.type == "erase",
                requests.c.status.in_(CERTIFIED),
                requests.c.finished_at <= signed_at,
                or_(requests.c.anchored_at.is_(None), requests.c.anchored_at < requests.c.finished_at),
            )
            .values(anchor=anchor, anchored_at=signed_at)
        )


# --- HTTP ------------------------------------------------------------------------------------------

bp = ApiBlueprint("gdpr_certificates", __name__)

READERS = ("compliance_officer", "vendor_admin", "privacy_officer")
_SIGNED = {
    "type": "object",
    "required": ["format", "certificate", "signature"],
    "properties": {
        "format": {"const": FORMAT},
        "certificate": {"type": "object"},
        "signature": {
            "type": "object",
            "required": ["algorithm", "key_id", "value"],
            "properties": {
                "algorithm": {"const": ALGORITHM},
                "key_id": {"type": "string"},
                "value": {"type": "string"},
            },
        },
    },
}
VERIFY = {
    "type": "object",
    "required": ["format", "certificate", "signature"],
    "additionalProperties": False,  # a signed certificate has these three members and no others
    "properties": {
        "format": {"type": "string", "maxLength": 100},
        "certificate": {"type": "object"},
        "signature": {"type": "object"},
    },
}
_VERDICT = {
    "type": "object",
    "required": ["valid", "reason"],
    "properties": {
        "valid": {"type": "boolean"},
        "reason": {"type": "string"},
        "key_id": {"type": ["string", "null"]},
    },
}
_KEYS = {
    "type": "object",
    "required": ["algorithm", "key_id", "keys"],
    "properties": {
        "algorithm": {"const": ALGORITHM},
        "key_id": {"type": "string"},
        "keys": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key_id", "algorithm", "current", "pem"],
                "properties": {
                    "key_id": {"type": "string"},
                    "algorithm": {"const": ALGORITHM},
                    "current": {"type": "boolean"},
                    "pem": {"type": "string"},
                },
            },
        },
    },
}


def _keys() -> CertificateKeys:
    return current_app.extensions["gdpr_certificates"]


@bp.operation(
    "GET",
    "/api/v1/requests/{request_id}/certificate",
    summary="The signed erasure certificate of a completed erasure (409 until the audit anchored it)",
    roles=READERS,
    tags=("certificates",),
    responses={200: _SIGNED, 404: None, 409: None},
)
def get_certificate(request_id):
    with runtime().db.transaction() as s:
        document = current_app.extensions["gdpr"].coordinator.view(s, authenticate(), request_id)
    return jsonify(certificate_for(document, _keys()))


@bp.operation(
    "GET",
    "/api/v1/certificates/key",
    summary="The public keys erasure certificates are signed with (Ed25519, PEM)",
    public=True,
    tags=("certificates",),
    responses={200: _KEYS},
)
def get_certificate_key():
    return jsonify(_keys().document())


@bp.operation(
    "POST",
    "/api/v1/certificates/verify",
    summary="Check an erasure certificate's signature: valid true or false, and why",
    body=VERIFY,
    public=True,
    tags=("certificates",),
    responses={200: _VERDICT},
)
def verify_certificate(body):
    reason = problem(body, _keys().public_keys)
    kid = (body.get("signature") or {}).get("key_id")
    return jsonify(
        {"valid": reason is None, "reason": reason or "valid", "key_id": kid if isinstance(kid, str) else None}
    )
