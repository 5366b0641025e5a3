"""Blind indexes (R7): keyed, truncated HMACs of normalised values, to find encrypted rows again."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.normalise import normalise_email, normalise_name, normalise_personnummer, normalise_phone

from .keyring import Keyring

__all__ = ["BlindIndex", "MIN_ROWS_PER_VALUE", "index_bits"]

#: Rows each index value is expected to match at the planned scale (docs/crypto.md "Sizing").
MIN_ROWS_PER_VALUE = 10


def index_bits(planned_rows: int, rows_per_value: int = MIN_ROWS_PER_VALUE) -> int:
    """Bits of a blind index so each value matches at least ``rows_per_value`` rows on average
    once ``planned_rows`` values are indexed: the largest ``b`` with planned_rows / 2**b >=
    rows_per_value (at least 1, at most 63).

    5 000 people -> 8 bits (~20 per value); 100 000 -> 13 bits (~12); 1 000 000 -> 16 bits (~15).
    Fewer bits only cost more rows decrypted per lookup; more bits make a value nearly unique
    to one person, linkable across records.
    """
    for name, value in (("planned_rows", planned_rows), ("rows_per_value", rows_per_value)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer")
    # the largest b with 2**b <= planned_rows // rows_per_value, in integers (no float rounding)
    return max(1, min(63, (planned_rows // rows_per_value).bit_length() - 1))


class BlindIndex:
    """Keyed, truncated HMAC-SHA256 of normalised values, for lookups on encrypted columns (R7).

    ``of(kind, value)`` = the top ``bits`` bits of HMAC-SHA256(K_kind, value), where
    K_kind = HKDF-SHA256(keyring.index_key, info="recept.blind-index.v1:" + kind).  The result
    is a non-negative int below 2**bits (``bits`` <= 63, so it fits a signed BIGINT column).

    Choosing ``bits`` (use :func:`index_bits` with the service's ``PLANNED_SUBJECTS``): an index value should match *several* rows at the planned scale, so the
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
    false negatives.  Changing ``bits`` or the index key means recomputing every index column
    (``shared.crypto.reindex``).

    ``of`` uses the keyring's primary index key.  While an index-key rotation is under way the
    keyring also holds older index keys; :meth:`candidates` and :meth:`match` give the values
    under every one of them, so a lookup still finds rows not yet re-indexed.
    """

    def __init__(self, keyring: Keyring, bits: int = 16) -> None:
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 63:
            raise ValueError("bits must be an integer from 1 to 63")
        self.bits = bits
        # primary first
        self._index_keys: tuple[bytes, ...] = tuple(keyring.index_keys.values())
        self._keys: dict[tuple[int, str], bytes] = {}

    def _key(self, kind: str, slot: int = 0) -> bytes:
        key = self._keys.get((slot, kind))
        if key is None:
            if not isinstance(kind, str) or not kind:
                raise ValueError("kind must be a non-empty string")
            key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"recept.blind-index.v1:" + kind.encode("utf-8")
            ).derive(self._index_keys[slot])
            self._keys[(slot, kind)] = key
        return key

    def _value(self, kind: str, normalised_value: str, slot: int) -> int:
        if not isinstance(normalised_value, str):
            raise TypeError("normalised_value must be a str")
        mac = hmac.HMAC(self._key(kind, slot), hashes.SHA256())
        mac.update(normalised_value.encode("utf-8"))
        return int.from_bytes(mac.finalize()[:8], "big") >> (64 - self.bits)

    def of(self, kind: str, normalised_value: str) -> int:
        """The value to store: under the primary index key."""
        return self._value(kind, normalised_value, 0)

    def candidates(self, kind: str, normalised_value: str) -> list[int]:
        """The values a stored row may hold: under every index key of the keyring, primary first."""
        return list(dict.fromkeys(self._value(kind, normalised_value, slot) for slot in range(len(self._index_keys))))

    def match(self, column: Any, kind: str, normalised_value: str) -> Any:
        """A SQLAlchemy condition: ``column`` holds ``normalised_value``'s value under any index key."""
        values = self.candidates(kind, normalised_value)
        return column == values[0] if len(values) == 1 else column.in_(values)

    @property
    def rotating(self) -> bool:
        """True while the keyring holds more than one index key (a re-index is due)."""
        return len(self._index_keys) > 1

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
