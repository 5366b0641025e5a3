"""What an audit checkpoint signature covers, and checking one with the audit's public key.

The audit service signs checkpoints (services/audit/checkpoints.py); others hold them as anchors (the gdpr
service's erasure certificates, issue 15) and check them offline without the audit's code or database.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["checkpoint_payload", "checkpoint_signature_problem"]


def checkpoint_payload(chain: str, seq: int, head_hex: str) -> bytes:
    """What a checkpoint signature covers: domain tag, chain id, sequence number, head hash."""
    return b"\x00".join([b"recept.audit.checkpoint.v1", chain.encode(), str(seq).encode(), head_hex.encode()])


def checkpoint_signature_problem(checkpoint: Mapping[str, Any], public_key: Ed25519PublicKey) -> str | None:
    """None when ``checkpoint`` (chain, seq, head_hash, signature) is signed by ``public_key``; else why not."""
    chain, seq, head, signature = (checkpoint.get(k) for k in ("chain", "seq", "head_hash", "signature"))
    if not (
        isinstance(chain, str)
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and isinstance(head, str)
        and isinstance(signature, str)
    ):
        return "malformed checkpoint"
    try:
        public_key.verify(base64.b64decode(signature, validate=True), checkpoint_payload(chain, seq, head))
    except (InvalidSignature, binascii.Error, ValueError):
        return "bad checkpoint signature"
    return None
