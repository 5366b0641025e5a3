"""The service's HTTP surface: health, OpenAPI, and no personal value in any URL."""

from __future__ import annotations

PERSONAL = {"name", "personnummer", "date_of_birth", "room", "bed", "diets", "allergies", "notes", "email", "phone"}


def test_health_and_openapi_document_every_operation(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "checks": {"broker": "ok"}}
    assert client.get("/readyz").status_code == 200
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    for path in (
        "/api/v1/orders",
        "/api/v1/orders/{order_id}/history",
        "/api/v1/individuals/search",
        "/api/v1/registers/{register_id}/grants",
        "/api/v1/assortment-lists/{list_id}/grants/{grant_id}",
    ):
        assert path in spec["paths"], path
    assert set(spec["paths"]["/api/v1/individuals/search"]) == {"post"}


def test_no_endpoint_takes_a_personal_value_in_its_url(client):
    """Personal data never in URLs: query parameters and path parameters are ids, dates and enums only."""
    spec = client.get("/openapi.json").get_json()
    for path, methods in spec["paths"].items():
        for operation in methods.values():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert not names & PERSONAL, (path, names & PERSONAL)
