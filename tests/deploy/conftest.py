"""Fixtures for the deployment tests: the parsed compose file and each service's deployment contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploy.contract import contract
from services import SERVICES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def contracts() -> dict:
    return {name: contract(name) for name in SERVICES}


@pytest.fixture(scope="session")
def generated_secrets(tmp_path_factory) -> Path:
    from deploy.make_secrets import generate

    directory = tmp_path_factory.mktemp("compose-secrets") / "secrets"
    generate(directory)
    return directory
