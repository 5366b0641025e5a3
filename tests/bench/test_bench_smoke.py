"""Every benchmark runs at tiny sizes in the suite, so none of them rots (figures are not judged)."""

import json

import pytest

from bench import runner


@pytest.fixture(autouse=True)
def _servers(postgres_server, rabbitmq_server):
    """The benchmarks use the real PostgreSQL and RabbitMQ."""


def test_every_benchmark_runs_at_smoke_size(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "latest.json")
    monkeypatch.setattr(runner, "DOC", tmp_path / "benchmarks.md")
    results = runner.run(smoke=True)
    runner.load_all()
    assert not results.get("failed")
    assert set(results["benchmarks"]) == set(runner.REGISTRY)
    for name, entry in results["benchmarks"].items():
        assert entry["figures"], name
        for figure in entry["figures"]:
            assert figure["value"] > 0, (name, figure["name"])
    written = json.loads((tmp_path / "latest.json").read_text())
    assert written["smoke"] is True and written["machine"]["cores"] >= 1


def test_doc_table_is_regenerated_between_markers(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose stays\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nmore prose\n")
    monkeypatch.setattr(runner, "DOC", doc)
    runner.write_doc(
        {
            "time": "T",
            "machine": {"cores": 2, "python": "3.11"},
            "benchmarks": {
                "x": {
                    "title": "t",
                    "figures": [
                        {
                            "name": "n",
                            "value": 10.0,
                            "unit": "events/s",
                            "baseline": 20.0,
                            "baseline_name": "raw",
                            "ratio": 0.5,
                            "goal": ">= 0.50 of baseline",
                            "meets_goal": True,
                        }
                    ],
                }
            },
        }
    )
    text = doc.read_text()
    assert "prose stays" in text and "more prose" in text and "old" not in text
    assert "| x | n | 10.0 events/s | 20.0 events/s (raw) | 0.50 | >= 0.50 of baseline — met |" in text
