"""Blind indexes (R7): keyed, truncated HMACs of normalised values, to find encrypted rows again."""
from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.normalise import normalise_email, normalise_name, normalise_personnummer, normalise_phone

from .keyring import Keyring

__all__ = ["BlindIndex"]


class BlindIndex:
    """Keyed, truncated HMAC-SHA256 of normalised values, for lookups on encrypted columns (R7).

    ``of(kind, value)`` = the top ``bits`` bits of HMAC-SHA256(K_kind, value), where
    K_kind = HKDF-SHA256(keyring.index_key, info="recept.blind-index.v1:" + kind).  The result
    is a non-negative int below 2**bits (``bits`` <= 63, so it fits a signed BIGINT column).

    Choosing ``bits``: an index value should match *several* rows at the planned scale, so the
    index does not single anyone out (no frequency analysis or cross-table linking of one
    person).  Expected rows per value = N / 2**bits for N indexed values, so pick
    ``bits ≈ log2(N / k)`` for k matches per value (k ≈ 10-50):

    =========  ==========================
    bits       rows per value
    =========  ==========================
    12         ~24 at 100 000, ~240 at 1M
    16         ~1.5 at 100 000, ~15 at 1M
    20         ~10 at 10M
    =========  ==========================

    A lookup selects the rows with the index value, decrypts them and keeps those whose
    normalised plaintext equals the query: false positives are filtered, there are never
    false negatives.  Changing ``bits`` or the index key means recomputing every index column,
    which is why :meth:`Keyring.rotated` keeps the index key.
    """

    def __init__(self, keyring: Keyring, bits: int = 16) -> None:
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 63:
            raise ValueError("bits must be an integer from 1 to 63")
        self.bits = bits
        self._index_key = keyring.index_key
        self._keys: dict[str, bytes] = {}

    def _key(self, kind: str) -> bytes:
        key = self._keys.get(kind)
        if key is None:
            if not isinstance(kind, str) or not kind:
                raise ValueError("kind must be a non-empty string")
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"recept.blind-index.v1:" + kind.encode("utf-8")).derive(self._index_key)
            self._keys[kind] = key
        return key

    def of(self, kind: str, normalised_value: str) -> int:
        if not isinstance(normalised_value, str):
            raise TypeError("normalised_value must be a str")
        mac = hmac.HMAC(self._key(kind), hashes.SHA256())
        mac.update(normalised_value.encode("utf-8"))
        return int.from_bytes(mac.finalize()[:8], "big") >> (64 - self.bits)

    def email(self, value: str) -> int:
        return self.of("email", normalise_email(value))

    def phone(self, value: str) -> int:
        return self.of("phone", normalise_phone(value))

    def personnummer(self, value: str) -> int:
        return self.of("personnummer", normalise_personnummer(value))

    def name(self, value: str) -> int:
        return self.of("name", normalise_name(value))

    def __repr__(self) -> str:
        return f"<BlindIndex bits={self.bits}>"
