"""deploy/make_secrets.py: every secret the compose run mounts, usable by the code, kept across runs."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from deploy.contract import bus_services, has_worker
from deploy.make_secrets import generate
from deploy.topology import VHOST, user_name
from services import SERVICES
from shared.crypto import Keyring


def test_generated_keys_load_with_the_services_own_code(generated_secrets):
    from services.auth.signing import SigningKeys

    for service in SERVICES:
        Keyring.from_json((generated_secrets / f"{service}-keyring").read_text())
    assert SigningKeys(generated_secrets / "auth-signing-keys", access_ttl=300).jwks()["keys"]
    key = serialization.load_pem_private_key((generated_secrets / "audit-checkpoint-key").read_bytes(), None)
    assert key.public_key()


def test_urls_name_each_services_own_database_role_and_broker_user(generated_secrets):
    for service in SERVICES:
        db = urlsplit((generated_secrets / f"{service}-database-url").read_text())
        assert (db.username, db.path, db.hostname) == (f"recept_{service}", f"/recept_{service}", "postgres")
        assert db.password == (generated_secrets / f"postgres-{service}-password").read_text().strip()
        if not has_worker(service):  # the portal: no bus, so no broker user or password at all
            assert not (generated_secrets / f"{service}-broker-url").exists()
            assert not (generated_secrets / f"rabbitmq-{service}-password").exists()
            continue
        broker = urlsplit((generated_secrets / f"{service}-broker-url").read_text())
        assert (broker.username, broker.path, broker.hostname) == (user_name(service), f"/{VHOST}", "rabbitmq")


def test_broker_definitions_carry_hashes_of_the_generated_passwords(generated_secrets):
    definitions = json.loads((generated_secrets / "rabbitmq-definitions.json").read_text())
    users = {u["name"]: u["password_hash"] for u in definitions["users"]}
    for service in bus_services():
        password = (generated_secrets / f"rabbitmq-{service}-password").read_text().strip()
        raw = base64.b64decode(users[user_name(service)])
        assert raw[4:] == hashlib.sha256(raw[:4] + password.encode()).digest()


def test_secrets_folder_is_private_and_its_files_readable_by_container_users(generated_secrets):
    assert stat.S_IMODE(generated_secrets.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in generated_secrets.iterdir())


def test_running_again_keeps_keys_and_passwords(tmp_path):
    """A new keyring would make every stored ciphertext unreadable (R7): existing secrets are never replaced."""
    generate(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "rabbitmq-definitions.json"}
    generate(tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "rabbitmq-definitions.json"}
    assert before == after


def test_the_demo_relay_certificate_is_signed_by_the_ca_crm_trusts(generated_secrets):
    from cryptography import x509

    ca = x509.load_pem_x509_certificate((generated_secrets / "crm-smtp-ca").read_bytes())
    cert = x509.load_pem_x509_certificate((generated_secrets / "mailpit-tls-cert").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["mailpit"]
    key = serialization.load_pem_private_key((generated_secrets / "mailpit-tls-key").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
