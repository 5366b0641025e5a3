"""What each service needs from its deployment, read from its declared settings.

Every service reads ``RECEPT_<SVC>_<NAME>`` then ``RECEPT_<NAME>`` (shared.config).  A
deployment must give each service:

* a database and a broker URL (secret settings, delivered as secret *files* named like the
  environment variable; ``deploy/entrypoint.sh`` exports them at start),
* every ``*_FILE`` setting pointing at a mounted secret under ``/run/secrets/``
  (the keyring, auth's signing keys, and whatever a service adds later),
* a service's own ``secret=True`` settings (e.g. crm's SMTP relay password) are credentials of
  systems outside Recept: optional, supplied by the operator the same way when used,
* every ``*_DIR`` setting pointing at a writable, persistent volume under ``/var/lib/recept/``
  (the image's file system is read-only at run time; e.g. audit's signed checkpoints),
* the erasure log (``ERASURE_LOG``, every service: each keeps data in a database of its own) on a
  persistent volume of its own, ``/var/lib/recept/erasure-log/<service>.log``, kept apart from the
  database and its backups and shared by the service's api and worker processes (all replicas append
  to the one file under its lock; docs/crypto.md "Backups and the erasure log"),
* the address of auth's public keys,
* a ``<SERVICE>_URL`` setting (the portal's ``AUTH_URL``, ``GDPR_URL``, ``AUDIT_URL``) names another
  service's api: it gets that api's address inside the deployment (``http://<service>-api:8080``).

A service without a worker (``has_worker=False`` on its spec: the portal) never touches the
bus, so it gets no broker URL, no broker user and no queue.

Deriving this from ``ServiceSpec.settings`` (not a list kept here) is what lets the
compose and Kubernetes tests notice when a service gains a secret the deployment lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import COMMON, Setting

SECRETS_DIR = "/run/secrets"
DATA_DIR = "/var/lib/recept"
ERASURE_LOG_VOLUME = "erasure-log"  # the volume (under DATA_DIR) of every service's erasure log
API_PORT = 8080
COMMON_NAMES = {s.name for s in COMMON}
# Not shared.config settings: services/wsgi.py reads them, to pick the service gunicorn serves
# and to trust the reverse proxy's X-Forwarded-* headers (api processes only).
SERVICE_VARIABLE = "RECEPT_SERVICE"
PROXY_VARIABLE = "RECEPT_BEHIND_PROXY"
WSGI_VARIABLES = (SERVICE_VARIABLE, PROXY_VARIABLE)
# What an api process gets besides its service's variables: compose and Kubernetes put every
# api behind one reverse proxy (nginx in compose, the cluster's ingress in Kubernetes).
API_ENV = {PROXY_VARIABLE: "true"}


def worker_variables(service: str) -> tuple[str, ...]:
    """Variables a worker reads besides its settings: its /metrics listener (shared/metrics.py)."""
    from shared.metrics import METRICS_HOST, METRICS_PORT

    return tuple(
        f"RECEPT_{prefix}{s.name}" for s in (METRICS_HOST, METRICS_PORT) for prefix in ("", f"{service.upper()}_")
    )


def has_worker(service: str) -> bool:
    """Does ``service`` run a worker (and so use the bus)?  The portal is an api only."""
    from services import load

    return load(service).has_worker


def bus_services() -> list[str]:
    """The services with a worker: the ones that need a broker user, a queue and a broker URL."""
    from services import SERVICES

    return [name for name in SERVICES if has_worker(name)]


def api_url(service: str) -> str:
    """Where ``service``'s api answers inside the deployment (compose service / Kubernetes Service)."""
    return f"http://{service}-api:{API_PORT}"


def secret_file_name(setting: Setting) -> str:
    """KEYRING_FILE -> keyring, SIGNING_KEYS_FILE -> signing-keys (same name in compose and k8s)."""
    return setting.name.removesuffix("_FILE").lower().replace("_", "-")


def volume_name(setting: Setting) -> str:
    """CHECKPOINT_DIR -> checkpoint."""
    return setting.name.removesuffix("_DIR").lower().replace("_", "-")


def erasure_log_path(service: str) -> str:
    """Where a deployed service's erasure log lives: on its own volume, not in the image or the database."""
    return f"{DATA_DIR}/{ERASURE_LOG_VOLUME}/{service}.log"


def variable(service: str, setting: Setting) -> str:
    """The variable a deployment sets: common file paths system-wide, everything else per service.

    ``./recept migrate`` looks for ``RECEPT_KEYRING_FILE`` by that exact name, hence the
    system-wide form for the common settings that point at files.
    """
    if setting.name in COMMON_NAMES and setting.name.endswith("_FILE"):
        return f"RECEPT_{setting.name}"
    return f"RECEPT_{service.upper()}_{setting.name}"


@dataclass
class Contract:
    service: str
    settings: dict[str, Setting]
    env: dict[str, str] = field(default_factory=dict)  # plain variables and their values
    secret_env: list[str] = field(default_factory=list)  # variables delivered as secret files
    optional_secrets: list[str] = field(default_factory=list)  # the operator's, only when used
    secret_files: dict[str, str] = field(default_factory=dict)  # setting name -> file under SECRETS_DIR
    # setting name -> volume name (under DATA_DIR): every *_DIR, and ERASURE_LOG (a file on its volume)
    data_dirs: dict[str, str] = field(default_factory=dict)
    upstreams: dict[str, str] = field(default_factory=dict)  # setting name -> service whose api it names
    worker: bool = True  # False: an api only, no bus

    @property
    def roles(self) -> tuple[str, ...]:
        """The processes the service runs (compose service suffixes)."""
        return ("api", "worker", "migrate") if self.worker else ("api", "migrate")

    def accepts(self, variable_name: str) -> bool:
        """Is ``variable_name`` one this service reads (either form), or one services/wsgi.py reads?"""
        if variable_name in WSGI_VARIABLES:
            return True
        if self.worker and variable_name in worker_variables(self.service):
            return True
        prefix = f"RECEPT_{self.service.upper()}_"
        name = (
            variable_name.removeprefix(prefix)
            if variable_name.startswith(prefix)
            else variable_name.removeprefix("RECEPT_")
        )
        return variable_name.startswith("RECEPT_") and name in self.settings

    def setting_of(self, variable_name: str) -> str | None:
        for prefix in (f"RECEPT_{self.service.upper()}_", "RECEPT_"):
            if variable_name.startswith(prefix) and variable_name.removeprefix(prefix) in self.settings:
                return variable_name.removeprefix(prefix)
        return None


def contract(service: str, jwks_url: str = f"http://auth-api:{API_PORT}/.well-known/jwks.json") -> Contract:
    from services import SERVICES, load

    settings = dict(load(service).config(env={}).settings)
    result = Contract(
        service, settings, env={SERVICE_VARIABLE: service, "RECEPT_JWKS_URL": jwks_url}, worker=has_worker(service)
    )
    for name, setting in settings.items():
        other = name.removesuffix("_URL").lower() if name.endswith("_URL") else None
        if other in SERVICES and other != service:
            result.upstreams[name] = other
            result.env[variable(service, setting)] = api_url(other)
        elif name == "BROKER_URL" and not result.worker:
            # Nothing of an api-only service connects to the broker (its api's readiness does not
            # ping it): leave the in-process default rather than hand out a broker credential.
            continue
        elif name.endswith("_FILE"):
            result.secret_files[name] = secret_file_name(setting)
            result.env[variable(service, setting)] = f"{SECRETS_DIR}/{secret_file_name(setting)}"
        elif name == "ERASURE_LOG":
            # Every service with a database keeps its shreds here, outside it (R2): a fixed path on a
            # volume of its own, so a restored database backup is erased again at the next start.
            result.data_dirs[name] = ERASURE_LOG_VOLUME
            result.env[variable(service, setting)] = erasure_log_path(service)
        elif name.endswith("_DIR"):
            result.data_dirs[name] = volume_name(setting)
            result.env[variable(service, setting)] = f"{DATA_DIR}/{result.data_dirs[name]}"
        elif setting.secret and f"{name}_FILE" not in settings:
            target = result.secret_env if name in COMMON_NAMES else result.optional_secrets
            target.append(variable(service, setting))
    return result
