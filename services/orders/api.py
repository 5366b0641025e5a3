"""HTTP API of the orders service."""
from shared.http import ApiBlueprint

bp = ApiBlueprint("orders", __name__)
