"""HTTP API of the audit service."""
from shared.http import ApiBlueprint

bp = ApiBlueprint("audit", __name__)
