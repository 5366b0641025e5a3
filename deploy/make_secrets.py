"""Create the secrets docker-compose.yml mounts: ``python -m deploy.make_secrets [--dir deploy/secrets]``.

Passwords, keyrings and signing keys are made here, on the operator's machine, and reach
the containers only as mounted secret files; none is in the image or in a committed file.
Re-running keeps what exists (a new keyring would make every stored ciphertext unreadable)
and re-derives only the files built from it (URLs, RabbitMQ definitions with password
hashes), so it is also the step to repeat after ``python -m deploy.render`` changed the
broker topology.

The folder is 0700; the files in it are 0644 because Compose bind-mounts file secrets
with their host permissions, and the containers run as other users (10001 for Recept,
999 for PostgreSQL, ...) that must read them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from deploy.contract import contract
from deploy.topology import ADMIN_USER, VHOST, all_topologies, definitions, rabbit_password_hash, user_name

DEFAULT_DIR = Path(__file__).resolve().parent / "secrets"
POSTGRES_HOST = "postgres:5432"
RABBITMQ_HOST = "rabbitmq:5672"


def database_name(service: str) -> str:
    return f"recept_{service}"


def secret_env_file(service: str, variable: str) -> str:
    """RECEPT_ORDERS_DATABASE_URL -> orders-database-url (the host file; the container sees the variable name)."""
    return f"{service}-" + variable.removeprefix(f"RECEPT_{service.upper()}_").lower().replace("_", "-")


def secret_file(service: str, file_name: str) -> str:
    return f"{service}-{file_name}"


def _keyring(path: Path) -> None:
    from shared.crypto import Keyring

    path.write_text(Keyring.generate().to_json(), encoding="utf-8")


def _signing_keys(path: Path) -> None:
    from services.auth.signing import SigningKeys

    SigningKeys(path, access_ttl=300).primary()  # creates the file with one Ed25519 key


def _ed25519_pem(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _forwarding_token(path: Path) -> None:
    # auth and the portal must hold the same token (services/auth/config.py): the second file made
    # copies the first.
    made = sorted(p for p in path.parent.glob("*-forwarding-token") if p != path)
    token = made[0].read_text(encoding="utf-8").strip() if made else secrets.token_urlsafe(32)
    path.write_text(token, encoding="utf-8")


def relay_tls(names: tuple[str, ...]) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) as PEM, for a demo SMTP relay known by ``names``.

    The compose run's relay (mailpit) speaks STARTTLS with this certificate and crm verifies it
    against this CA (``RECEPT_CRM_SMTP_CA_PATH``), so notices never cross the network in clear.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Recept demo relay CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    sans = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


# Setting name -> how to make its file.  A service that adds a *_FILE setting adds a line here;
# tests/deploy fails until it does, so no deployment starts with a missing secret.
FILE_GENERATORS: dict[str, Callable[[Path], None]] = {
    "KEYRING_FILE": _keyring,
    "SIGNING_KEYS_FILE": _signing_keys,
    "CHECKPOINT_KEY_FILE": _ed25519_pem,
    "FORWARDING_TOKEN_FILE": _forwarding_token,
}
# The compose run's demo relay (mailpit) and what crm trusts it by: made together, kept together.
RELAY_FILES = ("crm-smtp-ca", "mailpit-tls-cert", "mailpit-tls-key")
RELAY_NAME = "mailpit"


class Secrets:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / name

    def keep_or_make(self, name: str, make: Callable[[Path], None]) -> None:
        path = self.path(name)
        if not path.exists():
            make(path)
        os.chmod(path, 0o644)

    def password(self, name: str) -> str:
        self.keep_or_make(name, lambda p: p.write_text(secrets.token_urlsafe(32), encoding="utf-8"))
        return self.path(name).read_text(encoding="utf-8").strip()

    def write(self, name: str, text: str) -> None:
        path = self.path(name)
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o644)


def generate(directory: Path = DEFAULT_DIR, services=None) -> list[str]:
    """Make (or keep) every secret of the compose deployment in ``directory``; returns the file names."""
    if services is None:
        from services import SERVICES as services
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    store = Secrets(directory)
    store.password("postgres-password")
    store.password("ldap-admin-password")
    hashes = {ADMIN_USER: rabbit_password_hash(store.password("rabbitmq-admin-password"))}
    for service in services:
        c = contract(service)
        db_password = store.password(f"postgres-{service}-password")
        values = {
            "DATABASE_URL": f"postgresql://{database_name(service)}:{db_password}@{POSTGRES_HOST}/"
            f"{database_name(service)}",
        }
        if c.worker:  # an api-only service (the portal) has no broker user
            broker_password = store.password(f"rabbitmq-{service}-password")
            hashes[user_name(service)] = rabbit_password_hash(broker_password)
            values["BROKER_URL"] = f"amqp://{user_name(service)}:{broker_password}@{RABBITMQ_HOST}/{VHOST}"
        for variable in c.secret_env:
            setting = c.setting_of(variable)
            if setting not in values:
                raise SystemExit(f"make_secrets: no value for {variable}; teach deploy/make_secrets.py to make it")
            store.write(secret_env_file(service, variable), values[setting])
        for setting, file_name in c.secret_files.items():
            if setting not in FILE_GENERATORS:
                raise SystemExit(f"make_secrets: no generator for {service}'s {setting}; add one to FILE_GENERATORS")
            store.keep_or_make(secret_file(service, file_name), FILE_GENERATORS[setting])
    if not all(store.path(name).exists() for name in RELAY_FILES):
        for name, pem in zip(RELAY_FILES, relay_tls((RELAY_NAME,))):
            store.path(name).write_bytes(pem)
    for name in RELAY_FILES:
        os.chmod(store.path(name), 0o644)
    store.write(
        "rabbitmq-definitions.json", json.dumps(definitions(all_topologies(), password_hashes=hashes), indent=2) + "\n"
    )
    return sorted(p.name for p in directory.iterdir() if p.name != ".gitignore")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.make_secrets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where to write them (default deploy/secrets)")
    args = parser.parse_args(argv)
    names = generate(args.dir)
    print(f"make_secrets: {len(names)} files in {args.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
