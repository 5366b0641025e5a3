"""deploy/k8s: a Kustomize base that follows the code, validates offline, and gives every service what it needs."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from deploy import render
from deploy.contract import DATA_DIR, ERASURE_LOG_VOLUME, PROXY_VARIABLE, SECRETS_DIR, api_url, erasure_log_path
from services import SERVICES

KUBERNETES_VERSION = "1.31.0"


def _load(path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization() -> dict:
    return _load(render.K8S / "kustomization.yaml")[0]


def _base() -> list[dict]:
    """The resources the kustomization lists, as Kustomize would render them (labels added)."""
    kustomization = _kustomization()
    labels = {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}
    documents = []
    for name in kustomization["resources"]:
        for doc in _load(render.K8S / name):
            doc["metadata"].setdefault("labels", {}).update(labels)
            documents.append(doc)
    return documents


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """`kubectl kustomize deploy/k8s` where kubectl exists (it does on this machine kind), else the same load in Python."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return _base()
    output = subprocess.run(
        [kubectl, "kustomize", str(render.K8S)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def _by_kind(documents, kind) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def test_committed_manifests_equal_what_the_code_renders():
    current = {path.name: path.read_text(encoding="utf-8") for path in render.K8S.glob("*.yaml")}
    assert current == render.render_k8s(), "deploy/k8s is stale: run `python -m deploy.render`"


def test_every_manifest_file_validates_offline():
    for path in sorted(render.K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _load(path):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_kustomized_base_renders_and_validates(rendered):
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == {
        (d["kind"], d["metadata"]["name"]) for d in _base()
    }
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "recept"


def test_a_deployment_and_service_per_api_and_a_deployment_per_worker(rendered, contracts):
    deployments, services = _by_kind(rendered, "Deployment"), _by_kind(rendered, "Service")
    for service in SERVICES:
        api = deployments[f"{service}-api"]
        assert api["spec"]["template"]["spec"]["containers"][0]["args"][0] == "gunicorn"
        selector = services[f"{service}-api"]["spec"]["selector"]
        assert selector.items() <= api["spec"]["template"]["metadata"]["labels"].items()
        if not contracts[service].worker:
            assert f"{service}-worker" not in deployments, f"{service}'s spec says it has no worker"
            continue
        worker = deployments[f"{service}-worker"]
        assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "python",
            "-m",
            f"services.{service}.worker",
        ]
        assert not selector.items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    assert "portal-worker" not in deployments


def _containers(documents):
    for doc in documents:
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def test_api_probes_use_readyz_and_healthz(rendered):
    for doc, container in _containers(rendered):
        if doc["metadata"]["name"].endswith("-api"):
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_only_api_containers_trust_the_proxy_headers(rendered):
    """Behind the cluster's ingress auth must see the client's address and the portal its prefix."""
    for doc, container in _containers(rendered):
        env = _environment(rendered, container)
        if doc["metadata"]["name"].endswith("-api"):
            assert env[PROXY_VARIABLE] == "true"
        else:
            assert PROXY_VARIABLE not in env


def test_every_container_has_requests_limits_and_runs_locked_down(rendered):
    for doc, container in _containers(rendered):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        # args keep the image's ENTRYPOINT, which exports the mounted secrets.
        assert "command" not in container


def test_secrets_hold_placeholders_only(rendered):
    for secret in _by_kind(rendered, "Secret").values():
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {render.PLACEHOLDER}


def _environment(rendered, container) -> dict[str, str]:
    config_maps = _by_kind(rendered, "ConfigMap")
    env = {}
    for source in container["envFrom"]:
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def _mounted_secret(rendered, doc, container) -> tuple[str, dict]:
    volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == SECRETS_DIR)
    name = volumes[mount["name"]]["secret"]["secretName"]
    return name, _by_kind(rendered, "Secret")[name]["stringData"]


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_the_code_needs_is_provided(rendered, contracts, service):
    c = contracts[service]
    docs = [d for d in rendered if d["kind"] in ("Deployment", "Job")]
    for doc, container in _containers(docs):
        name = container["name"]
        if not (doc["metadata"]["name"].startswith(f"{service}-") or name == f"migrate-{service}"):
            continue
        env = _environment(rendered, container)
        secret_name, secret = _mounted_secret(rendered, doc, container)
        assert secret_name == f"recept-{service}", "a container sees only its own service's secret"
        assert env["RECEPT_SERVICE"] == service
        assert env["RECEPT_JWKS_URL"] == "http://auth-api:8080/.well-known/jwks.json"
        assert {c.setting_of(v) for v in env} >= {"KEYRING_FILE", "JWKS_URL", *c.secret_files, *c.data_dirs}
        assert set(c.secret_env) <= set(secret), "database and broker URLs come from the secret"
        if not c.worker:
            assert not any(c.setting_of(v) == "BROKER_URL" for v in [*env, *secret]), (
                f"{service} has no worker and so needs no broker credential"
            )
        for setting, upstream in c.upstreams.items():
            called = next(v for v in env if c.setting_of(v) == setting)
            assert env[called] == api_url(upstream)
            assert f"{upstream}-api" in _by_kind(rendered, "Service")
        for file_name in c.secret_files.values():
            assert file_name in secret
        for variable in env:
            assert c.accepts(variable) or not variable.startswith("RECEPT_"), f"{variable} is read by no setting"
        if name != f"migrate-{service}":
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            for volume in c.data_dirs.values():
                assert f"{DATA_DIR}/{volume}" in mounts


def test_one_migration_job_migrates_every_service(rendered):
    job = _by_kind(rendered, "Job")["recept-migrate"]
    containers = job["spec"]["template"]["spec"]["containers"]
    assert [c["args"] for c in containers] == [["python", "-m", "services.cli", "migrate", s] for s in SERVICES]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_kustomization_lists_exactly_the_rendered_files():
    listed = set(_kustomization()["resources"])
    assert listed == {p.name for p in render.K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_cookies_are_secure_and_notices_use_starttls(rendered):
    """Security review (issue 14): the cluster's settings turn both on."""
    config = _by_kind(rendered, "ConfigMap")
    assert config["recept-portal"]["data"]["RECEPT_PORTAL_COOKIE_SECURE"] == "true"
    assert config["recept-crm"]["data"]["RECEPT_CRM_SMTP_STARTTLS"] == "true"


# --- the three-node RabbitMQ (deploy/k8s/rabbitmq/, issue 20) ----------------------------------------


def test_the_rabbitmq_base_is_rendered_from_the_code_and_validates():
    current = {p.name: p.read_text(encoding="utf-8") for p in render.RABBITMQ_K8S.glob("*.yaml")}
    assert current == render.render_rabbitmq_k8s(), "deploy/k8s/rabbitmq is stale: run `python -m deploy.render`"
    for doc in _load(render.RABBITMQ_K8S / "rabbitmq.yaml"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert _load(render.RABBITMQ_K8S / "kustomization.yaml")[0]["resources"] == ["rabbitmq.yaml"]


def test_rabbitmq_runs_three_clustered_nodes_that_keep_a_majority():
    docs = _load(render.RABBITMQ_K8S / "rabbitmq.yaml")
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] == 3 and statefulset["spec"]["podManagementPolicy"] == "Parallel"
    headless = _by_kind(docs, "Service")[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    conf = _by_kind(docs, "ConfigMap")["rabbitmq-config"]["data"]["rabbitmq.conf"]
    assert [
        line.split(" = ")[1] for line in conf.splitlines() if line.startswith("cluster_formation.classic_config")
    ] == [f"rabbit@rabbitmq-{i}.rabbitmq-nodes" for i in range(3)]
    assert "cluster_partition_handling = pause_minority" in conf
    assert "load_definitions = /run/secrets/rabbitmq-definitions.json" in conf
    assert _by_kind(docs, "PodDisruptionBudget")["rabbitmq"]["spec"]["maxUnavailable"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["RABBITMQ_NODENAME"] == "rabbit@$(POD_NAME).rabbitmq-nodes" and env["RABBITMQ_USE_LONGNAME"] == "true"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert set(_by_kind(docs, "Secret")["recept-rabbitmq"]["stringData"].values()) == {render.PLACEHOLDER}
    # The services reach it through the client Service; the quorum queues are declared by the workers.
    assert _by_kind(docs, "Service")["rabbitmq"]["spec"]["ports"][0]["port"] == 5672


@pytest.mark.parametrize("service", SERVICES)
def test_every_data_keeping_service_keeps_its_erasure_log_on_a_claim_its_api_and_worker_share(
    rendered, contracts, service
):
    """Issue 14 (R2): the erasure log must outlive pods and never sit beside the database, or a restored
    backup brings erased people back. One ReadWriteMany claim per service, mounted by every api replica
    and the worker, and the service's ERASURE_LOG on it (not on the read-only image)."""
    c = contracts[service]
    assert "DATABASE_URL" in c.settings and c.data_dirs.get("ERASURE_LOG") == ERASURE_LOG_VOLUME
    claim = _by_kind(rendered, "PersistentVolumeClaim")[f"recept-{service}-erasure-log"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    deployments = _by_kind(rendered, "Deployment")
    names = [f"{service}-api", *([f"{service}-worker"] if c.worker else [])]
    assert deployments[f"{service}-api"]["spec"]["replicas"] > 1  # hence one shared, locked file (docs/crypto.md)
    for name in names:
        pod = deployments[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        [container] = pod["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == f"{DATA_DIR}/{ERASURE_LOG_VOLUME}"]
        assert not mount.get("readOnly")
        assert volumes[mount["name"]] == {
            "name": mount["name"],
            "persistentVolumeClaim": {"claimName": f"recept-{service}-erasure-log"},
        }
        env = _environment(rendered, container)
        assert env[f"RECEPT_{service.upper()}_ERASURE_LOG"] == erasure_log_path(service)
        assert erasure_log_path(service).startswith(mount["mountPath"] + "/")
