"""HTTP API of the auth service."""
from shared.http import ApiBlueprint

bp = ApiBlueprint("auth", __name__)
