"""deploy/Dockerfile, .dockerignore, the entrypoint and the health check: one slim non-root image with no secrets in it."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading

import pytest

from tests.deploy.conftest import ROOT
from tests.processes import free_port

DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def test_image_builds_on_python_slim_and_runs_as_a_non_root_user():
    stage = _final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    ops = [op for op, _ in stage]
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    assert ("ENTRYPOINT", '["/app/deploy/entrypoint.sh"]') in stage


def test_image_installs_the_project_with_pip_and_copies_no_local_state():
    copies = [arg for op, arg in _instructions() if op == "COPY"]
    assert not any(re.match(r"^\.\s", arg) for arg in copies), "COPY . would take whatever lies in the tree"
    assert not any(re.search(r"\b(var|\.venv|secrets|tests)\b", arg) for arg in copies)
    runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
    assert "pip wheel" in runs and "pip install" in runs


def test_no_secret_is_built_into_the_image():
    for op, arg in _instructions():
        if op in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|KEYRING|DATABASE_URL|BROKER_URL", arg), arg


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "var", "deploy/secrets"} <= set(ignored)


def _run_entrypoint(secrets_dir, *command: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "RECEPT_SECRETS_DIR": str(secrets_dir)}
    return subprocess.run(["sh", str(ENTRYPOINT), *command], env=env, capture_output=True, text=True, timeout=30)


def test_entrypoint_exports_secret_files_named_like_variables(tmp_path):
    (tmp_path / "RECEPT_ORDERS_DATABASE_URL").write_text("postgresql://u:p@db/orders\n")
    (tmp_path / "keyring").write_text('{"keys": []}')
    result = _run_entrypoint(tmp_path, "env")
    assert result.returncode == 0, result.stderr
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert variables["RECEPT_ORDERS_DATABASE_URL"] == "postgresql://u:p@db/orders"  # trailing newline dropped
    assert "keyring" not in variables


def test_entrypoint_never_prints_a_secret_and_passes_the_exit_code_on(tmp_path):
    (tmp_path / "RECEPT_BAD-NAME").write_text("hunter2-secret")
    result = _run_entrypoint(tmp_path, "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert "hunter2-secret" not in result.stdout + result.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_healthcheck_passes_on_200_and_fails_otherwise(http_server):
    from deploy.healthcheck import main

    assert main([f"{http_server}/readyz"]) == 0
    assert main([f"{http_server}/other"]) == 1


def test_healthcheck_fails_when_nothing_listens():
    from deploy.healthcheck import main

    assert main([f"http://127.0.0.1:{free_port()}/readyz"]) == 1
