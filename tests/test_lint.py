"""scripts/lint.py: every check runs, one summary line, non-zero exit when any check fails (issue 13)."""

from __future__ import annotations

import sys

import pytest

from scripts import lint


def _check(name: str, code: str) -> lint.Check:
    return lint.Check(name, (sys.executable, "-c", code))


def test_the_summary_names_each_failing_check_with_its_last_line() -> None:
    ok = lint.Result(_check("types", ""), 0, "Success: no issues found in 3 source files")
    bad = lint.Result(_check("style", ""), 1, "Found 2 errors.")
    worse = lint.Result(_check("format", ""), 2, "1 file would be reformatted")

    assert lint.summary([ok]) == "lint: passed (types: Success: no issues found in 3 source files)"
    line = lint.summary([ok, bad, worse])
    assert line == "lint: FAILED (style: Found 2 errors.; format: 1 file would be reformatted)"
    assert "\n" not in line


@pytest.mark.integration  # runs child processes
def test_every_check_runs_and_one_failure_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        lint,
        "CHECKS",
        (
            _check("first", "import sys; print('first: 1 error'); sys.exit(1)"),
            _check("second", "print('second: fine')"),
        ),
    )

    assert lint.main() == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["first: 1 error", "second: fine"]  # the later check still ran, output shown
    assert out[-1] == "lint: FAILED (first: first: 1 error)"

    monkeypatch.setattr(lint, "CHECKS", (_check("only", "print('all good')"),))
    assert lint.main() == 0
    assert capsys.readouterr().out.splitlines()[-1] == "lint: passed (only: all good)"
