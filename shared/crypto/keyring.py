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
from pathlib import Path
from typing import Any, Mapping

__all__ = ["KEY_BYTES", "Keyring", "KeyringError"]

KEY_BYTES = 32          # AES-256 KEKs, data keys and the index key
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


class Keyring:
    """Key-encryption keys (KEKs) by id, one of them primary, plus the blind-index key.

    Immutable: :meth:`rotated` and :meth:`without` return new keyrings.  JSON form::

        {"primary": "<kid>", "keys": {"<kid>": "<base64 32 bytes>", ...}, "index_key": "<base64 32 bytes>"}
    """

    __slots__ = ("_keys", "primary_id", "index_key")

    def __init__(self, keys: Mapping[str, bytes], primary_id: str, index_key: bytes) -> None:
        if not keys:
            raise KeyringError("keyring has no key-encryption keys")
        checked: dict[str, bytes] = {}
        for kid, key in keys.items():
            if not isinstance(kid, str) or not _KID.match(kid):
                raise KeyringError("key ids must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
            if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
                raise KeyringError(f"key {kid!r} must be {KEY_BYTES} bytes")
            checked[kid] = bytes(key)
        if primary_id not in checked:
            raise KeyringError(f"primary key id {primary_id!r} is not among the keyring's keys")
        if not isinstance(index_key, (bytes, bytearray)) or len(index_key) != KEY_BYTES:
            raise KeyringError(f"index_key must be {KEY_BYTES} bytes")
        if bytes(index_key) in checked.values():
            raise KeyringError("index_key must differ from every key-encryption key")
        self._keys = checked
        self.primary_id: str = primary_id
        self.index_key: bytes = bytes(index_key)

    # construction

    @classmethod
    def generate(cls) -> "Keyring":
        kid = secrets.token_hex(8)
        return cls({kid: os.urandom(KEY_BYTES)}, kid, os.urandom(KEY_BYTES))

    @classmethod
    def from_json(cls, text: str) -> "Keyring":
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
        unknown = sorted(set(data) - {"primary", "keys", "index_key"})
        if unknown:
            raise KeyringError(f"keyring has unknown fields: {', '.join(map(repr, unknown))}")
        missing = [name for name in ("primary", "keys", "index_key") if name not in data]
        if missing:
            raise KeyringError(f"keyring is missing: {', '.join(missing)}")
        primary, keys = data["primary"], data["keys"]
        if not isinstance(primary, str):
            raise KeyringError('keyring "primary" must be a key id string')
        if not isinstance(keys, dict) or not keys:
            raise KeyringError('keyring "keys" must be a non-empty object {"<kid>": "<base64>"}')
        decoded = {}
        for kid, value in keys.items():
            if not _KID.match(kid):
                raise KeyringError("key ids must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
            decoded[kid] = _b64key(value, f"key {kid!r}")
        return cls(decoded, primary, _b64key(data["index_key"], "index_key"))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Keyring":
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
        # one line, so it fits an environment variable or a .env file
        return json.dumps({"primary": self.primary_id, "keys": keys, "index_key": _b64(self.index_key)})

    def rotated(self) -> "Keyring":
        """A new random primary KEK; every old KEK stays (for unwrapping) and the index key is kept."""
        kid = secrets.token_hex(8)
        while kid in self._keys:  # pragma: no cover - 64-bit collision
            kid = secrets.token_hex(8)
        return Keyring({**self._keys, kid: os.urandom(KEY_BYTES)}, kid, self.index_key)

    def without(self, kid: str) -> "Keyring":
        """This keyring minus one retired, non-primary KEK (after :meth:`Vault.rewrap`)."""
        self.kek(kid)
        if kid == self.primary_id:
            raise KeyringError("cannot remove the primary key; rotate first")
        return Keyring({k: v for k, v in self._keys.items() if k != kid}, self.primary_id, self.index_key)

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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyring):
            return NotImplemented
        return (self.primary_id, self._keys, self.index_key) == (other.primary_id, other._keys, other.index_key)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Keyring primary={self.primary_id!r} keys={list(self._keys)!r}>"

