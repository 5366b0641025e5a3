"""docker-compose.yml: valid Compose, and every service, port, variable and secret the code needs is there.

No Docker engine runs here, so the file is checked against the Compose Specification's
schema and against what the services declare (deploy/contract.py reads their settings).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from deploy.contract import (
    DATA_DIR,
    ERASURE_LOG_VOLUME,
    PROXY_VARIABLE,
    SECRETS_DIR,
    api_url,
    bus_services,
    contract,
    erasure_log_path,
)
from deploy.topology import service_topology
from services import SERVICES
from shared.bus import queue_name
from tests.deploy.conftest import ROOT

# The project's shared/ folder lies beside the checkout (here and in CI's fresh clone).
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
# (service, role) of every process the code asks for: an api-only service (the portal) has no worker.
PROCESSES = [(service, role) for service in SERVICES for role in contract(service).roles]


def test_compose_file_is_valid_against_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(compose)


def test_every_service_has_an_api_a_migration_and_a_worker_when_it_has_one(compose, contracts):
    names = set(compose["services"])
    for service in SERVICES:
        assert {f"{service}-{role}" for role in contracts[service].roles} <= names
        assert (f"{service}-worker" in names) == contracts[service].worker, (
            f"{service}: a worker in compose must match the spec's has_worker"
        )
    assert {"rabbitmq", "postgres", "ldap", "proxy"} <= names
    assert "portal-worker" not in names  # the portal's spec says has_worker = False


@pytest.mark.parametrize("service", SERVICES)
def test_processes_run_the_documented_commands_from_one_image(compose, contracts, service):
    commands = {
        "api": ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8080", "services.wsgi:app"],
        "worker": ["python", "-m", f"services.{service}.worker"],
        "migrate": ["python", "-m", "services.cli", "migrate", service],
    }
    for role in contracts[service].roles:
        definition = compose["services"][f"{service}-{role}"]
        assert definition["command"] == commands[role]
        assert definition["image"] == "recept:latest"
        assert definition["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
        assert definition["environment"]["RECEPT_SERVICE"] == service
        assert "entrypoint" not in definition  # deploy/entrypoint.sh must export the secrets


def _provided(definition: dict) -> dict[str, str]:
    """Variable -> value or where it comes from (secret files named like variables become variables)."""
    provided = {name: str(value) for name, value in (definition.get("environment") or {}).items()}
    for secret in _secret_mounts(definition).values():
        if re.fullmatch(r"RECEPT_[A-Z0-9_]+", secret["target"]):
            provided[secret["target"]] = f"secret:{secret['source']}"
    return provided


def _secret_mounts(definition: dict) -> dict[str, dict]:
    mounts = {}
    for entry in definition.get("secrets") or []:
        entry = {"source": entry, "target": entry} if isinstance(entry, str) else entry
        mounts[f"{SECRETS_DIR}/{entry.get('target', entry['source'])}"] = entry
    return mounts


@pytest.mark.parametrize(("service", "role"), PROCESSES)
def test_every_setting_the_code_needs_is_provided(compose, contracts, service, role):
    """Database and broker URLs, the keyring, every *_FILE secret and *_DIR volume, auth's public keys,
    the addresses of the services it calls."""
    c = contracts[service]
    definition = compose["services"][f"{service}-{role}"]
    provided = _provided(definition)
    given = {c.setting_of(name) for name in provided}
    required = {"DATABASE_URL", "KEYRING_FILE", "JWKS_URL", *c.secret_files, *c.data_dirs, *c.upstreams}
    if c.worker:
        required.add("BROKER_URL")
    else:
        assert "BROKER_URL" not in given, f"{service} has no worker and so needs no broker credential"
    assert required <= given, f"{service}-{role} lacks {sorted(required - given)}"
    for name, value in provided.items():
        if c.setting_of(name) in c.upstreams:
            assert value == api_url(c.upstreams[c.setting_of(name)]), f"{name} must reach that api directly"
    for variable in c.secret_env:
        assert c.setting_of(variable) in {c.setting_of(n) for n, v in provided.items() if v.startswith("secret:")}, (
            f"{variable} must come from a secret, not the environment"
        )


@pytest.mark.parametrize(("service", "role"), PROCESSES)
def test_file_settings_point_at_mounted_secrets_and_dirs_at_volumes(compose, contracts, service, role):
    c = contracts[service]
    definition = compose["services"][f"{service}-{role}"]
    mounts = _secret_mounts(definition)
    volumes = [v.split(":")[1] for v in definition.get("volumes") or []]
    for name, value in _provided(definition).items():
        setting = c.setting_of(name)
        if setting in c.secret_files:
            assert value in mounts, f"{name}={value} is not a mounted secret"
        if setting in c.data_dirs and role != "migrate":
            assert value.startswith(f"{DATA_DIR}/") and any(value.startswith(v) for v in volumes), (
                f"{name}={value} is on the read-only image file system, not a volume"
            )


@pytest.mark.parametrize("service", SERVICES)
def test_no_variable_is_misspelt_or_stale(compose, contracts, service):
    """Every RECEPT_* variable set is one the service reads (a typo would be ignored silently)."""
    for role in contracts[service].roles:
        for name in _provided(compose["services"][f"{service}-{role}"]):
            if name.startswith("RECEPT_"):
                assert contracts[service].accepts(name), f"{service}-{role}: {name} is read by no setting"


def test_no_credential_is_written_in_the_compose_file(compose):
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), "a URL with a password"
    for name, definition in compose["services"].items():
        for variable, value in (definition.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|KEYRING$|_KEY$", variable) and not str(value).startswith(
                f"{SECRETS_DIR}/"
            ):
                pytest.fail(f"{name}: {variable} holds a secret in plain text; mount it as a file")


def test_every_secret_is_a_file_that_make_secrets_creates(compose, generated_secrets):
    made = {p.name for p in generated_secrets.iterdir()}
    for name, secret in compose["secrets"].items():
        path = Path(secret["file"])
        assert path.parent == Path("deploy/secrets"), f"secret {name} lives outside deploy/secrets"
        assert path.name in made, f"make_secrets does not create {path.name}"
    used = {
        entry if isinstance(entry, str) else entry["source"]
        for definition in compose["services"].values()
        for entry in definition.get("secrets") or []
    }
    assert used <= set(compose["secrets"])


def test_secrets_folder_is_never_committed():
    ignore = (ROOT / "deploy" / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert "*" in ignore and "!.gitignore" in ignore
    assert "deploy/secrets" in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()


def test_only_the_proxy_is_published_beyond_localhost(compose):
    public = {
        name: definition["ports"]
        for name, definition in compose["services"].items()
        if any(not str(p).startswith("127.0.0.1:") for p in definition.get("ports") or [])
    }
    assert public == {"proxy": ["8080:8080"]}


def test_start_order_waits_for_health(compose):
    services = compose["services"]
    for name, definition in services.items():
        for dependency, condition in (definition.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no health check"
            if condition["condition"] == "service_completed_successfully":
                assert services[dependency]["restart"] == "no"
    for service in SERVICES:
        c = contract(service)
        for role in set(c.roles) - {"migrate"}:
            depends = services[f"{service}-{role}"]["depends_on"]
            assert depends[f"{service}-migrate"] == {"condition": "service_completed_successfully"}
            if c.worker:
                assert depends["rabbitmq"] == {"condition": "service_healthy"}
            else:
                assert "rabbitmq" not in depends, f"{service} never talks to the broker"
            # An api that calls other apis (the portal) reports ready only once they are.
            for upstream in c.upstreams.values():
                assert depends[f"{upstream}-api"] == {"condition": "service_healthy"}
        assert services[f"{service}-migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert "/readyz" in " ".join(services[f"{service}-api"]["healthcheck"]["test"])
        assert services["proxy"]["depends_on"][f"{service}-api"] == {"condition": "service_healthy"}


def test_jwks_url_points_at_the_auth_api(compose):
    for service in SERVICES:
        url = compose["services"][f"{service}-api"]["environment"]["RECEPT_JWKS_URL"]
        assert url == "http://auth-api:8080/.well-known/jwks.json"
    assert "auth-api" in compose["services"]


def test_postgres_creates_one_database_per_service(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["environment"]["RECEPT_SERVICES"].split() == list(SERVICES)
    mounted = {s if isinstance(s, str) else s["source"] for s in postgres["secrets"]}
    assert {f"postgres-{service}-password" for service in SERVICES} <= mounted
    assert any(
        v.startswith("./deploy/postgres/init-databases.sh:/docker-entrypoint-initdb.d/") for v in postgres["volumes"]
    )


def test_rabbitmq_loads_the_generated_definitions(compose):
    rabbit = compose["services"]["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:") and rabbit["image"].endswith("-management")
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text(encoding="utf-8")
    assert "load_definitions = /run/secrets/rabbitmq-definitions.json" in conf
    assert "rabbitmq-definitions.json" in rabbit["secrets"]


@pytest.mark.parametrize("service", bus_services())
def test_delivery_limit_in_compose_matches_the_definitions(compose, service):
    """A worker declaring its queue with another x-delivery-limit than the broker has would fail to start."""
    environment = {k: str(v) for k, v in compose["services"][f"{service}-worker"]["environment"].items()}
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text(encoding="utf-8"))
    committed = next(q for q in definitions["queues"] if q["name"] == queue_name(service))
    declared = service_topology(service, env=environment).queues[queue_name(service)]
    assert declared["arguments"] == committed["arguments"]


def test_the_proxy_serves_every_api_under_its_name(compose):
    conf = (ROOT / "deploy" / "proxy" / "nginx.conf").read_text(encoding="utf-8")
    for service in SERVICES:
        block = re.search(rf"location /{service}/ \{{(.*?)\}}", conf, re.S)
        assert block, f"no location /{service}/"
        assert f"http://{service}-api:8080" in block.group(1)
        assert rf"rewrite ^/{service}/(.*)$ /$1 break;" in block.group(1)  # the prefix is stripped
        # ... and handed on as X-Forwarded-Prefix; the `set` must come before `rewrite ... break`,
        # which ends the rewrite module's directives (`set` is one of them).
        body = block.group(1)
        assert f"set $recept_prefix /{service};" in body
        assert body.index("set $recept_prefix") < body.index("rewrite ")
        # A proxy_set_header here would drop every inherited one (Host, X-Forwarded-For, ...).
        assert "proxy_set_header" not in body
    http = conf[conf.index("http {") : conf.index("server {")]
    for header in (
        "Host $host",
        "X-Forwarded-For $proxy_add_x_forwarded_for",
        "X-Forwarded-Proto $scheme",
        "X-Forwarded-Prefix $recept_prefix",
    ):
        assert f"proxy_set_header {header};" in http
    assert "$request " not in conf and '"$request"' not in conf, "query strings would reach the access log"
    assert compose["services"]["proxy"]["ports"] == ["8080:8080"]


@pytest.mark.parametrize(("service", "role"), PROCESSES)
def test_only_api_processes_trust_the_proxy_headers(compose, service, role):
    """Auth's per-address brute-force block sees the client, not the proxy; the portal its /portal/ prefix."""
    environment = compose["services"][f"{service}-{role}"]["environment"]
    if role == "api":
        assert environment[PROXY_VARIABLE] == "true"
    else:
        assert PROXY_VARIABLE not in environment


def test_auth_reaches_the_demo_directory(compose):
    ldap = compose["services"]["ldap"]
    assert ldap["environment"]["LDAP_ROOT"] == "dc=recept,dc=test"
    assert "./deploy/ldap:/ldifs:ro" in ldap["volumes"]
    assert (ROOT / "deploy" / "ldap" / "demo.ldif").read_text(encoding="utf-8").count("dn: dc=recept,dc=test") == 1
    assert compose["services"]["auth-api"]["depends_on"]["ldap"] == {"condition": "service_healthy"}


def test_cookies_are_secure_and_notices_go_over_verified_starttls(compose):
    """Security review (issue 14): both were off in compose."""
    services = compose["services"]
    for role in ("api", "migrate"):
        assert services[f"portal-{role}"]["environment"]["RECEPT_PORTAL_COOKIE_SECURE"] == "true"
    for role in ("api", "worker", "migrate"):
        definition = services[f"crm-{role}"]
        env = definition["environment"]
        assert env["RECEPT_CRM_SMTP_STARTTLS"] == "true" and env["RECEPT_CRM_SMTP_HOST"] == "mailpit"
        assert env["RECEPT_CRM_SMTP_CA_PATH"] in _secret_mounts(definition)
    mailpit = services["mailpit"]
    assert mailpit["environment"]["MP_SMTP_REQUIRE_STARTTLS"] == "true"
    for variable in ("MP_SMTP_TLS_CERT", "MP_SMTP_TLS_KEY"):
        assert mailpit["environment"][variable] in _secret_mounts(mailpit)


def test_auth_and_the_portal_mount_one_forwarding_token(compose, generated_secrets):
    """The portal forwards the browser's address to auth; auth believes it only with this token."""
    services = compose["services"]
    sources = set()
    for service, role in (("auth", "api"), ("portal", "api")):
        definition = services[f"{service}-{role}"]
        path = definition["environment"][f"RECEPT_{service.upper()}_FORWARDING_TOKEN_FILE"]
        sources.add(compose["secrets"][_secret_mounts(definition)[path]["source"]]["file"])
    tokens = {(generated_secrets / Path(source).name).read_text() for source in sources}
    assert len(sources) == 2 and len(tokens) == 1 and len(tokens.pop()) >= 32


@pytest.mark.parametrize("service", SERVICES)
def test_every_data_keeping_service_keeps_its_erasure_log_on_a_named_volume_of_its_own(compose, contracts, service):
    """Issue 14 (R2): each service's erasure log on a named volume (persistent, not the read-only image,
    not a tmpfs, not the database's volume) that its api and worker both mount, at the path ERASURE_LOG names."""
    c = contracts[service]
    assert "DATABASE_URL" in c.settings and c.data_dirs.get("ERASURE_LOG") == ERASURE_LOG_VOLUME
    volume = f"{service}-erasure-log"
    assert volume in compose["volumes"]
    assert not any(v.startswith(f"{volume}:") for v in compose["services"]["postgres"]["volumes"])
    for role in ("api", "worker") if c.worker else ("api",):
        definition = compose["services"][f"{service}-{role}"]
        assert f"{volume}:{DATA_DIR}/{ERASURE_LOG_VOLUME}" in definition["volumes"], f"{service}-{role}"
        assert definition["environment"][f"RECEPT_{service.upper()}_ERASURE_LOG"] == erasure_log_path(service)
    others = [v for other in SERVICES if other != service for v in compose["services"][f"{other}-api"]["volumes"]]
    assert not any(v.startswith(f"{volume}:") for v in others), "a log of its own: the MAC names the service"


def test_the_image_has_the_erasure_log_directory_for_a_fresh_volume():
    """A fresh named volume takes the owner of the image's directory: it must exist, owned by the service user."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert f"install -d -o recept -g recept -m 0700 {DATA_DIR}/{ERASURE_LOG_VOLUME}" in dockerfile


@pytest.mark.parametrize("service", SERVICES)
def test_the_restore_step_is_documented_and_exists_for_every_service(service, capsys):
    """docs/deploy.md and docs/crypto.md name the restore step, `./recept <service> replay-erasures`, and
    every service's command line has it."""
    import importlib

    deploy_doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    crypto_doc = (ROOT / "docs" / "crypto.md").read_text(encoding="utf-8")
    assert "## Backups and restore" in deploy_doc
    section = deploy_doc.split("## Backups and restore", 1)[1].split("\n## ", 1)[0]
    assert "replay-erasures" in section and f"{service}-erasure-log" in section
    assert f"recept-{service}-erasure-log" in section or "recept-<service>-erasure-log" in section
    assert "**Restore procedure**" in crypto_doc and "replay-erasures" in crypto_doc
    cli = importlib.import_module(f"services.{service}.cli")
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay-erasures", "--help"])
    assert exited.value.code == 0 and "erasure log" in capsys.readouterr().out
