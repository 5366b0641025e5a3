"""Sealed outbox payloads: gdpr commands and export replies carry personal data, so their
outbox rows are not readable at rest while they wait for the broker (R7)."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .keyring import Keyring

__all__ = ["PayloadCipher"]


class PayloadCipher:
    """Encrypts transient outbox payloads (gdpr commands and export replies carry personal
    data) so they are not readable at rest while they wait for the broker.

    AES-256-GCM under a key derived (HKDF) from one of the keyring's key-encryption keys;
    the payload names that key's id, and the message id is the associated data.
    """

    VERSION = b"\x01"

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def _key(self, kid: str) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=None, info=b"recept.outbox.payload").derive(self.keyring.kek(kid))

    def seal(self, message_id: str, plaintext: bytes) -> bytes:
        kid = self.keyring.primary_id.encode()
        nonce = os.urandom(12)
        sealed = AESGCM(self._key(self.keyring.primary_id)).encrypt(nonce, plaintext, message_id.encode())
        return self.VERSION + bytes([len(kid)]) + kid + nonce + sealed

    def open(self, message_id: str, payload: bytes) -> bytes:
        if not payload.startswith(self.VERSION):
            return payload  # plain JSON (events never carry personal values)
        n = payload[1]
        kid, nonce, sealed = payload[2 : 2 + n].decode(), payload[2 + n : 14 + n], payload[14 + n :]
        return AESGCM(self._key(kid)).decrypt(nonce, sealed, message_id.encode())
