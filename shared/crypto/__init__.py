"""Personal data at rest (R7, R16): keyring, per-subject data keys, field encryption,
crypto-shredding, blind indexes and sealed outbox payloads.

Key hierarchy (see docs/crypto.md)::

    Keyring (environment / mounted secret)                             keyring.py
      KEKs {kid: 32 bytes}, one primary
        ──wraps──▶ data_keys row per data subject (32-byte data key)    vault.py
                     └──encrypts──▶ fields of that subject
        ──HKDF──▶ sealing key of transient outbox payloads             payload.py
        ──HKDF──▶ MAC key of the erasure log (outside the database)      erasure_log.py
      index keys {iid: 32 bytes}, one primary
        ──HKDF(kind)──▶ blind-index HMAC keys                          blind_index.py

Only primitives from the ``cryptography`` package are used: AES-256-GCM (``AESGCM``),
HMAC-SHA256 and HKDF-SHA256.  Nothing in this package puts key material or personal data
into an exception message or a ``repr``.  The normal forms the blind indexes hash live in
``shared.normalise``.
"""

from __future__ import annotations

from .blind_index import BlindIndex, index_bits
from .erasure_log import ErasureLog, ErasureLogError
from .keyring import Keyring, KeyringError
from .payload import PayloadCipher
from .vault import ERASED, DecryptionError, ErasedType, Vault, crypto_tables

__all__ = [
    "ERASED",
    "ErasedType",
    "KeyringError",
    "DecryptionError",
    "Keyring",
    "crypto_tables",
    "Vault",
    "BlindIndex",
    "index_bits",
    "ErasureLog",
    "ErasureLogError",
    "PayloadCipher",
]
