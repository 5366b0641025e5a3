"""The keyring (R7, R16): key-encryption keys by id, one primary, and the blind-index key.

It comes from the environment or a mounted secret (``Keyring.from_config``); nothing here
puts key material into an exception message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_INDEX_ID", "KEY_BYTES", "Keyring", "KeyringError"]

KEY_BYTES = 32  # AES-256 KEKs, data keys and the index keys
#: Id of the single index key of a keyring in the original JSON form (``"index_key"``).
DEFAULT_INDEX_ID = "index"
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class KeyringError(ValueError):
    """The keyring is malformed, incomplete, or does not fit the stored keys.

    Messages name key ids and lengths, never key material.
    """


def _b64key(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"{what} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _checked_keys(keys: Mapping[str, bytes], what: str) -> dict[str, bytes]:
    checked: dict[str, bytes] = {}
    for kid, key in keys.items():
        if not isinstance(kid, str) or not _KID.match(kid):
            raise KeyringError("key ids must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise KeyringError(f"{what} {kid!r} must be {KEY_BYTES} bytes")
        checked[kid] = bytes(key)
    return checked


def _decoded_keys(keys: Any, field: str, what: str) -> dict[str, bytes]:
    if not isinstance(keys, dict) or not keys:
        raise KeyringError(f'keyring "{field}" must be a non-empty object {{"<id>": "<base64>"}}')
    decoded: dict[str, bytes] = {}
    for kid, value in keys.items():
        if not _KID.match(kid):
            raise KeyringError("key ids must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
        decoded[kid] = _b64key(value, f"{what} {kid!r}")
    return decoded


def _new_id(taken: Mapping[str, bytes]) -> str:
    kid = secrets.token_hex(8)
    while kid in taken:  # pragma: no cover - 64-bit collision
        kid = secrets.token_hex(8)
    return kid


class Keyring:
    """Key-encryption keys (KEKs) by id, one of them primary, plus the blind-index keys by id.

    Immutable: :meth:`rotated`, :meth:`without`, :meth:`rotated_index` and
    :meth:`without_index` return new keyrings.  JSON form (one index key, as ``generate`` makes)::

        {"primary": "<kid>", "keys": {"<kid>": "<base64 32 bytes>", ...}, "index_key": "<base64 32 bytes>"}

    and once the index key was rotated (several index keys, one primary)::

        {"primary": ..., "keys": ..., "index_primary": "<iid>", "index_keys": {"<iid>": "<base64>", ...}}

    :attr:`index_key` is always the *primary* index key: new blind-index values and every key
    derived from the index key use it; :class:`BlindIndex` also matches the other index keys'
    values while ``reindex`` moves rows to the primary (docs/crypto.md "Rotating the index key").
    """

    __slots__ = ("_keys", "primary_id", "_index_keys", "index_primary_id")

    def __init__(
        self,
        keys: Mapping[str, bytes],
        primary_id: str,
        index_key: bytes | Mapping[str, bytes],
        index_primary_id: str | None = None,
    ) -> None:
        if not keys:
            raise KeyringError("keyring has no key-encryption keys")
        checked = _checked_keys(keys, "key")
        if primary_id not in checked:
            raise KeyringError(f"primary key id {primary_id!r} is not among the keyring's keys")
        if isinstance(index_key, (bytes, bytearray)):
            if len(index_key) != KEY_BYTES:
                raise KeyringError(f"index_key must be {KEY_BYTES} bytes")
            index_keys = {DEFAULT_INDEX_ID: bytes(index_key)}
            index_primary_id = DEFAULT_INDEX_ID
        elif isinstance(index_key, Mapping) and index_key:
            index_keys = _checked_keys(index_key, "index key")
            if index_primary_id not in index_keys:
                raise KeyringError(f"index primary id {index_primary_id!r} is not among the keyring's index keys")
        else:
            raise KeyringError(f"index_key must be {KEY_BYTES} bytes")
        if set(index_keys.values()) & set(checked.values()):
            raise KeyringError("index_key must differ from every key-encryption key")
        if len(set(index_keys.values())) != len(index_keys):
            raise KeyringError("index keys must differ from each other")
        self._keys = checked
        self.primary_id: str = primary_id
        self._index_keys = index_keys
        self.index_primary_id: str = index_primary_id

    # construction

    @classmethod
    def generate(cls) -> Keyring:
        kid = secrets.token_hex(8)
        return cls({kid: os.urandom(KEY_BYTES)}, kid, os.urandom(KEY_BYTES))

    @classmethod
    def from_json(cls, text: str | bytes) -> Keyring:
        if isinstance(text, (bytes, bytearray)):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise KeyringError("keyring is not UTF-8 text") from None
        if not isinstance(text, str):
            raise KeyringError("keyring must be JSON text")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"keyring is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(data, dict):
            raise KeyringError('keyring JSON must be an object {"primary", "keys", "index_key"}')
        unknown = sorted(set(data) - {"primary", "keys", "index_key", "index_keys", "index_primary"})
        if unknown:
            raise KeyringError(f"keyring has unknown fields: {', '.join(map(repr, unknown))}")
        several = "index_keys" in data or "index_primary" in data
        required = ("primary", "keys", "index_primary", "index_keys") if several else ("primary", "keys", "index_key")
        missing = [name for name in required if name not in data]
        if missing:
            raise KeyringError(f"keyring is missing: {', '.join(missing)}")
        if several and "index_key" in data:
            raise KeyringError('keyring has both "index_key" and "index_keys"; keep only "index_keys"')
        primary, keys = data["primary"], data["keys"]
        if not isinstance(primary, str):
            raise KeyringError('keyring "primary" must be a key id string')
        decoded = _decoded_keys(keys, "keys", "key")
        if not several:
            return cls(decoded, primary, _b64key(data["index_key"], "index_key"))
        if not isinstance(data["index_primary"], str):
            raise KeyringError('keyring "index_primary" must be an index key id string')
        return cls(
            decoded, primary, _decoded_keys(data["index_keys"], "index_keys", "index key"), data["index_primary"]
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Keyring:
        """From ``config["KEYRING"]`` (JSON text) or ``config["KEYRING_FILE"]`` (path); exactly one."""
        text = config.get("KEYRING") or None
        path = config.get("KEYRING_FILE") or None
        if text and path:
            raise KeyringError("both KEYRING and KEYRING_FILE are set; set only one")
        if text:
            return cls.from_json(text)
        if path:
            try:
                content = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise KeyringError(f"cannot read KEYRING_FILE {str(path)!r}: {reason}") from None
            try:
                return cls.from_json(content)
            except KeyringError as exc:
                raise KeyringError(f"KEYRING_FILE {str(path)!r}: {exc}") from None
        raise KeyringError(
            "no keyring configured: set RECEPT_<SERVICE>_KEYRING (JSON) or RECEPT_<SERVICE>_KEYRING_FILE "
            "(path of a JSON file); `./recept keys` prints a new one"
        )

    # serialisation and rotation

    def to_json(self) -> str:
        keys = {self.primary_id: _b64(self._keys[self.primary_id])}
        keys.update((kid, _b64(key)) for kid, key in self._keys.items() if kid != self.primary_id)
        data: dict[str, Any] = {"primary": self.primary_id, "keys": keys}
        if list(self._index_keys) == [DEFAULT_INDEX_ID]:
            data["index_key"] = _b64(self.index_key)  # the original one-index-key form
        else:
            index_keys = {self.index_primary_id: _b64(self.index_key)}
            index_keys.update((iid, _b64(key)) for iid, key in self._index_keys.items() if iid != self.index_primary_id)
            data.update(index_primary=self.index_primary_id, index_keys=index_keys)
        # one line, so it fits an environment variable or a .env file
        return json.dumps(data)

    def rotated(self) -> Keyring:
        """A new random primary KEK; every old KEK stays (for unwrapping) and the index keys are kept."""
        kid = _new_id(self._keys)
        return Keyring({**self._keys, kid: os.urandom(KEY_BYTES)}, kid, self._index_keys, self.index_primary_id)

    def without(self, kid: str) -> Keyring:
        """This keyring minus one retired, non-primary KEK (after :meth:`Vault.rewrap`)."""
        self.kek(kid)
        if kid == self.primary_id:
            raise KeyringError("cannot remove the primary key; rotate first")
        return Keyring(
            {k: v for k, v in self._keys.items() if k != kid}, self.primary_id, self._index_keys, self.index_primary_id
        )

    def rotated_index(self) -> Keyring:
        """A new random primary index key; the old index keys stay, so lookups still find rows
        indexed under them until ``reindex`` has moved every row (then :meth:`without_index`)."""
        iid = _new_id(self._index_keys)
        return Keyring(self._keys, self.primary_id, {**self._index_keys, iid: os.urandom(KEY_BYTES)}, iid)

    def without_index(self, iid: str) -> Keyring:
        """This keyring minus one retired, non-primary index key (after ``reindex``)."""
        if iid not in self._index_keys:
            raise KeyringError(f"keyring has no index key {iid!r}; it has {', '.join(map(repr, self._index_keys))}")
        if iid == self.index_primary_id:
            raise KeyringError("cannot remove the primary index key; rotate the index key first")
        return Keyring(
            self._keys, self.primary_id, {k: v for k, v in self._index_keys.items() if k != iid}, self.index_primary_id
        )

    # access

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def primary(self) -> bytes:
        return self._keys[self.primary_id]

    def kek(self, kid: str) -> bytes:
        try:
            return self._keys[kid]
        except (KeyError, TypeError):
            raise KeyringError(
                f"keyring has no key-encryption key {kid!r}; it has {', '.join(map(repr, self._keys))}"
            ) from None

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    @property
    def index_key(self) -> bytes:
        """The primary index key (new blind-index values and the keys derived from it)."""
        return self._index_keys[self.index_primary_id]

    @property
    def index_keys(self) -> dict[str, bytes]:
        """Every index key by id, the primary first (a copy)."""
        return {
            self.index_primary_id: self.index_key,
            **{iid: key for iid, key in self._index_keys.items() if iid != self.index_primary_id},
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyring):
            return NotImplemented
        return (self.primary_id, self._keys, self.index_primary_id, self._index_keys) == (
            other.primary_id,
            other._keys,
            other.index_primary_id,
            other._index_keys,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<Keyring primary={self.primary_id!r} keys={list(self._keys)!r} "
            f"index_primary={self.index_primary_id!r} index_keys={list(self._index_keys)!r}>"
        )
