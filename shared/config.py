"""Settings from the environment, per service, with safe defaults and clear errors.

A setting NAME of service SVC is read from ``RECEPT_SVC_NAME``, then from the
system-wide ``RECEPT_NAME``, then falls back to its default.  Secret settings
never echo their value in an error message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no/on/off")


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


PARSERS: dict[type | str, Callable[[str], Any]] = {
    str: lambda raw: raw,
    int: _int,
    float: _float,
    bool: _bool,
    list: _list,
}


@dataclass(frozen=True)
class Setting:
    name: str
    type: type = str
    default: Any = None
    help: str = ""
    secret: bool = False
    minimum: float | None = None
    choices: tuple[str, ...] | None = None

    def parse(self, raw: str, source: str) -> Any:
        try:
            value = PARSERS[self.type](raw)
        except ValueError as exc:
            shown = "" if self.secret else f" (got {raw!r})"
            raise ConfigError(f"{source}: {exc}{shown}") from None
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{source}: must be at least {self.minimum}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{source}: must be one of {', '.join(self.choices)}")
        return value


def _default_database_url(service: str) -> str:
    return f"sqlite:///{ROOT / 'var' / (service + '.db')}"


def default_erasure_log(service: str, database_url: str) -> Path:
    """Where the erasure log goes when ``ERASURE_LOG`` is not set (docs/crypto.md "Backups").

    Beside a SQLite file database (``var/erasure-log/<service>.log`` in development), otherwise
    ``var/erasure-log/<service>.log`` of the checkout.  Compose and Kubernetes set
    ``ERASURE_LOG`` to a mounted volume that is not part of the database's backups.
    """
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and database_url[len(prefix) :] not in ("", ":memory:"):
        return Path(database_url[len(prefix) :].split("?", 1)[0]).parent / "erasure-log" / f"{service}.log"
    return ROOT / "var" / "erasure-log" / f"{service}.log"


# Settings every service has.  Services add their own with ``extra``.
COMMON: tuple[Setting, ...] = (
    Setting("DATABASE_URL", str, None, "SQLAlchemy URL of this service's own database", secret=True),
    Setting(
        "BROKER_URL",
        str,
        "memory://",
        "amqp://user:pass@host:5672/vhost (a cluster: host1:5672,host2:5672,…), or memory:// (in-process)",
        secret=True,
    ),
    Setting("KEYRING", str, None, "key-encryption keyring as JSON (see ./recept keys)", secret=True),
    Setting("KEYRING_FILE", str, None, "path of a keyring JSON file (a mounted secret)"),
    Setting(
        "JWKS_URL",
        str,
        "http://127.0.0.1:8080/auth/.well-known/jwks.json",
        "where the auth service publishes its public keys",
    ),
    Setting("TOKEN_ISSUER", str, "recept-auth", "expected `iss` of access tokens"),
    Setting("MAX_CONTENT_LENGTH", int, 1_048_576, "largest accepted request body in bytes", minimum=1024),
    Setting("LOG_LEVEL", str, "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Setting("PREFETCH", int, 200, "messages a consumer may hold unacknowledged", minimum=1),
    Setting("DELIVERY_LIMIT", int, 5, "deliveries of a failing message before it is dead-lettered", minimum=1),
    Setting("RELAY_BATCH", int, 500, "outbox rows the relay publishes per batch", minimum=1),
    Setting("RELAY_INTERVAL", float, 0.2, "seconds the relay waits when the outbox is empty", minimum=0.001),
    Setting(
        "DATABASE_WAIT",
        float,
        300.0,
        "seconds a consumer waits for an unreachable database before giving a batch back to the broker",
        minimum=0,
    ),
    Setting(
        "ERASURE_LOG",
        str,
        None,
        "append-only file recording every crypto-shred outside the database, "
        "replayed after a restore (default: var/erasure-log/<service>.log; a volume in compose/k8s)",
    ),
    Setting(
        "PLANNED_SUBJECTS",
        int,
        100_000,
        "people this service is sized for: the blind indexes of orders and crm "
        "keep log2(PLANNED_SUBJECTS / 10) bits, so each value matches ~10 rows (changing it: ./recept <service> reindex)",
        minimum=1,
    ),
    Setting(
        "ANNOUNCE_INTERVAL", float, 60.0, "seconds between a worker's announcements to the gdpr service", minimum=1
    ),
)


@dataclass
class Config(Mapping[str, Any]):
    """The resolved settings of one service: ``config["DATABASE_URL"]``."""

    service: str
    # The resolved values, also written to directly (``config.values["keyset"] = ...``) by service
    # set-up and tests.  The name shadows ``Mapping.values()``: use ``config.items()`` instead.
    values: dict[str, Any] = field(default_factory=dict)  # type: ignore[assignment]  # see above
    settings: dict[str, Setting] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def describe(self) -> list[tuple[str, str]]:
        """(environment variable, help) for every setting, for docs and --help."""
        prefix = f"RECEPT_{self.service.upper()}_"
        return [(prefix + s.name, s.help) for s in self.settings.values()]


def load_config(
    service: str,
    extra: tuple[Setting, ...] = (),
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve ``COMMON`` plus ``extra`` for ``service`` from ``env`` (default: os.environ).

    ``overrides`` (already typed values, e.g. from a test) win over everything.
    """
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    settings = {s.name: s for s in (*COMMON, *extra)}
    values: dict[str, Any] = {}
    for name, setting in settings.items():
        if name in overrides:
            values[name] = overrides.pop(name)
            continue
        for key in (f"RECEPT_{service.upper()}_{name}", f"RECEPT_{name}"):
            if key in env:
                values[name] = setting.parse(env[key], key)
                break
        else:
            values[name] = setting.default
    if values.get("DATABASE_URL") is None:
        values["DATABASE_URL"] = _default_database_url(service)
    values.update(overrides)  # unknown override keys are allowed: tests pass fakes this way
    return Config(service=service, values=values, settings=settings)


def secret_value(config: Mapping[str, Any], name: str) -> str | None:
    """A secret given as ``NAME`` or as a file ``NAME_FILE`` (a mounted secret), stripped; None when neither."""
    value = config.get(name)
    path = config.get(f"{name}_FILE")
    if not value and path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"{name}_FILE: the file cannot be read") from None
    return value or None
