"""HTTP API of the gdpr service."""
from shared.http import ApiBlueprint

bp = ApiBlueprint("gdpr", __name__)
