"""Signed checkpoints of the audit chains: the Ed25519 signing key, trusted public keys, and the files
written outside the database.

A checkpoint is ``{"format", "chain", "seq", "head_hash", "key_id", "signature", "created_at"}``; the
signature covers ``domain.checkpoint_payload(chain, seq, head_hash)``.  Key ids are derived from the
public key (first 16 bytes of SHA-256 of its raw form, hex), so a key id cannot be claimed by another key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.clock import rfc3339, utcnow
from shared.config import ConfigError

from .domain import checkpoint_payload

FORMAT = 1
_SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,80}$")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Signer:
    """The checkpoint signing key (a PEM PKCS#8 Ed25519 private key file)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> Signer:
        """Load the key; with ``create``, generate it first when the file does not exist (dev runs)."""
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            # Written aside, then linked into place: a thread or process that loses the race
            # must never read a half-written key file.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another one generated it first; use theirs
            finally:
                tmp.unlink()
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise ConfigError(f"audit checkpoint key file {path} cannot be read ({type(exc).__name__})") from None
        except (ValueError, TypeError):
            raise ConfigError(f"audit checkpoint key file {path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"audit checkpoint key file {path} does not hold an Ed25519 key")
        return cls(key)

    def sign(self, chain: str, seq: int, head_hex: str) -> dict[str, Any]:
        signature = self._key.sign(checkpoint_payload(chain, seq, head_hex))
        return {
            "format": FORMAT,
            "chain": chain,
            "seq": seq,
            "head_hash": head_hex,
            "key_id": self.key_id,
            "signature": base64.b64encode(signature).decode(),
            "created_at": rfc3339(utcnow()),
        }


class TrustedKeys:
    """The public keys whose checkpoints verification accepts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], extra: Iterable[Ed25519PublicKey] = ()) -> TrustedKeys:
        keys = list(extra)
        for path in paths:
            try:
                key = serialization.load_pem_public_key(Path(path).read_bytes())
            except OSError as exc:
                raise ConfigError(f"trusted audit key {path} cannot be read ({type(exc).__name__})") from None
            except ValueError:
                raise ConfigError(f"trusted audit key {path} is not a PEM public key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"trusted audit key {path} is not an Ed25519 key")
            keys.append(key)
        return cls(keys)

    def problem(self, checkpoint: dict[str, Any]) -> str | None:
        """None when the checkpoint is well formed and signed by a trusted key; else what is wrong."""
        if not well_formed(checkpoint):
            return "malformed"
        key = self.keys.get(checkpoint["key_id"])
        if key is None:
            return "unknown_key"
        try:
            signature = base64.b64decode(checkpoint["signature"], validate=True)
            key.verify(signature, checkpoint_payload(checkpoint["chain"], checkpoint["seq"], checkpoint["head_hash"]))
        except (InvalidSignature, binascii.Error, ValueError):
            return "bad_signature"
        return None


def well_formed(checkpoint: Any) -> bool:
    return (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("chain"), str)
        and isinstance(checkpoint.get("seq"), int)
        and not isinstance(checkpoint.get("seq"), bool)
        and isinstance(checkpoint.get("head_hash"), str)
        and re.fullmatch(r"[0-9a-f]{64}", checkpoint["head_hash"]) is not None
        and isinstance(checkpoint.get("key_id"), str)
        and isinstance(checkpoint.get("signature"), str)
    )


class CheckpointFiles:
    """Checkpoints as JSON files under a directory outside the database: ``<dir>/<chain>/<seq>.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def _folder(chain: str) -> str:
        # The chain inside the file is what counts (and is signed); the folder name only sorts files.
        safe = chain.replace(":", "_")
        return safe if _SAFE.match(safe) else "chain-" + hashlib.sha256(chain.encode()).hexdigest()[:24]

    def path(self, chain: str, seq: int) -> Path:
        return self.directory / self._folder(chain) / f"{seq:015d}.json"

    def write(self, checkpoint: dict[str, Any]) -> Path:
        """Write atomically (temporary file, fsync, rename), so a crash never leaves half a checkpoint."""
        path = self.path(checkpoint["chain"], checkpoint["seq"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(checkpoint, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def exists(self, chain: str, seq: int) -> bool:
        return self.path(chain, seq).exists()

    def read_all(self) -> list[tuple[str, Any]]:
        """(file name, parsed content or None when unreadable) for every checkpoint file."""
        found: list[tuple[str, Any]] = []
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("*/*.json")):
            try:
                found.append((str(path.relative_to(self.directory)), json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                found.append((str(path.relative_to(self.directory)), None))
        return found

    def remove_before(self, chain: str, seq: int) -> int:
        """Drop the files of checkpoints older than ``seq`` (their entries were purged)."""
        folder = self.directory / self._folder(chain)
        removed = 0
        if folder.is_dir():
            for path in folder.glob("*.json"):
                if path.stem.isdigit() and int(path.stem) < seq:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
