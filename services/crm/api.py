"""HTTP API of the crm service."""
from shared.http import ApiBlueprint

bp = ApiBlueprint("crm", __name__)
