"""Static checks of the tree: ``python -m scripts.lint`` from the repository root.

Each check is a command with its configuration in ``pyproject.toml``; mypy is strict on
``shared/`` (``[tool.mypy]``).  Every check runs, its output is shown, and one summary line
ends the run; the exit status is non-zero when any check failed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Check:
    name: str
    command: tuple[str, ...]


CHECKS: tuple[Check, ...] = (
    # Paths and options come from [tool.mypy], so `mypy` alone checks the same thing.
    Check("mypy", (sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"))),
    # [tool.ruff]: pyflakes, pycodestyle, import order, pyupgrade, bugbear; then the formatter's verdict.
    Check("ruff check", (sys.executable, "-m", "ruff", "check", "--no-cache", ".")),
    Check("ruff format", (sys.executable, "-m", "ruff", "format", "--check", "--no-cache", ".")),
)


@dataclass(frozen=True)
class Result:
    check: Check
    returncode: int
    last_line: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def run(check: Check) -> Result:
    """Run one check from the repository root, showing its output as it is."""
    completed = subprocess.run(check.command, cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stdout.write(completed.stdout)
    sys.stderr.write(completed.stderr)
    lines = [line for line in (completed.stdout + completed.stderr).splitlines() if line.strip()]
    return Result(check, completed.returncode, lines[-1].strip() if lines else "no output")


def summary(results: list[Result]) -> str:
    """One line: which checks failed (with their own last word on it), or that all passed."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return f"lint: passed ({', '.join(f'{r.check.name}: {r.last_line}' for r in results)})"
    return f"lint: FAILED ({'; '.join(f'{r.check.name}: {r.last_line}' for r in failed)})"


def main() -> int:
    results = [run(check) for check in CHECKS]
    print(summary(results), flush=True)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
