"""The example Prometheus alert rules and Grafana dashboard in deploy/ (issue 20) name only metrics the
code exposes, and the alerts the operator needs are there: dead letters, overdue requests, outbox age."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from shared.bus import EVENTS, Binding
from shared.metrics import exposition
from tests.support import make_runtime

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\brecept_[a-z_]+\b")


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> set[str]:
    """Every sample name the services' /metrics can show (counters with _total, histograms' parts): the
    counted figures as the code defines them, and the scrape-time ones as real runtimes report them."""
    from prometheus_client import REGISTRY

    from services import load

    def sample_names(name: str, kind: str) -> set[str]:
        if kind == "counter":
            return {name.removesuffix("_total") + "_total"}
        if kind == "histogram":
            return {name + s for s in ("_bucket", "_count", "_sum")}
        return {name}

    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= sample_names(family.name, family.type)
    for service in ("orders", "gdpr", "audit"):
        runtime = make_runtime(load(service), f"sqlite:///{tmp_path_factory.mktemp(service) / 'db.sqlite'}")
        runtime.bus.declare([Binding(EVENTS, "#")])
        text = exposition(runtime, broker=True).decode()
        runtime.db.dispose()
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
            names |= sample_names(name, kind)
    return names


def test_alert_rules_cover_dead_letters_overdue_requests_and_outbox_age(exposed):
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert "recept_dead_letter_messages" in alerts["ReceptDeadLetters"]["expr"]
    assert alerts["ReceptDeadLetters"]["expr"].rstrip().endswith("> 0")
    assert "recept_gdpr_requests_overdue" in alerts["ReceptDataSubjectRequestsOverdue"]["expr"]
    assert "recept_outbox_oldest_age_seconds" in alerts["ReceptOutboxStuck"]["expr"]
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], name
        unknown = set(METRIC.findall(rule["expr"])) - exposed
        assert not unknown, f"{name} names metrics nobody exposes: {unknown}"


def test_dashboard_queries_name_exposed_metrics(exposed):
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "recept-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = set().union(*(METRIC.findall(e) for e in exprs))
    assert not used - exposed, used - exposed
    for figure in (
        "recept_http_requests_total",
        "recept_http_request_duration_seconds_bucket",
        "recept_outbox_backlog",
        "recept_outbox_oldest_age_seconds",
        "recept_consumer_backlog_messages",
        "recept_consumer_redeliveries_total",
        "recept_dead_letter_messages",
        "recept_gdpr_requests",
        "recept_gdpr_requests_overdue",
        "recept_audit_chain_verifications_total",
    ):
        assert figure in used, figure


def test_the_example_scrape_config_reaches_every_process():
    from deploy.contract import bus_services
    from services import SERVICES

    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {f"{s}-api:8080" for s in SERVICES} | {f"{s}-worker:9100" for s in bus_services()} == targets
