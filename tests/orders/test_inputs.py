"""An individual's record stays readable (issue 18): the input layer refuses what the domain could not
store faithfully, and a stored value that cannot be read is a typed problem, never a 500."""

from __future__ import annotations

from sqlalchemy import func, select, update

from services.orders.models import individuals


def path(world, suffix: str = "") -> str:
    return f"/registers/{world.register['id']}/individuals{suffix}"


def test_a_texture_level_sent_as_3_0_is_stored_as_3_and_the_register_stays_readable(world):
    """texture_level 3.0 (a valid JSON Schema integer) used to be stored as "3.0" and break every read;
    the input layer now reads an integral number as an int, and a fraction is refused."""
    person = world.ok("POST", path(world), world.admin, {"name": "Greta Lindqvist", "texture_level": 3.0}, 201)
    assert world.ok("GET", f"/individuals/{person['id']}", world.staff)["texture_level"] == 3
    world.ok("PATCH", f"/individuals/{person['id']}", world.admin, {"texture_level": 4.0})
    assert world.ok("GET", f"/individuals/{person['id']}", world.staff)["texture_level"] == 4
    refused = world.call("PATCH", f"/individuals/{person['id']}", world.admin, {"texture_level": 4.5})
    assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
    assert refused.get_json()["errors"] == [
        {"field": "texture_level", "message": "has the wrong type (expected integer or null)"}
    ]
    assert world.ok("GET", f"/individuals/{person['id']}", world.staff)["texture_level"] == 4
    assert world.ok("GET", path(world), world.staff)["items"]
    with world.runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(individuals)) == 1


def _store_texture_level(world, individual_id: str, text: str) -> None:
    orders = world.runtime.domain.individuals
    with world.runtime.db.transaction() as s:
        blob = orders._encrypt(s, individual_id, "texture_level", text)
        s.execute(update(individuals).where(individuals.c.id == individual_id).values(texture_level=blob))


def test_a_texture_level_stored_as_3_0_before_the_fix_reads_as_3(world):
    person = world.individual(texture_level=3)
    _store_texture_level(world, person["id"], "3.0")
    assert world.ok("GET", f"/individuals/{person['id']}", world.staff)["texture_level"] == 3
    changed = world.ok("PATCH", f"/individuals/{person['id']}", world.admin, {"notes": "ok"})
    assert changed["id"] == person["id"]


def test_a_damaged_stored_value_is_a_409_problem_naming_the_field(world):
    person = world.individual(texture_level=3)
    _store_texture_level(world, person["id"], "three")
    response = world.call("GET", f"/individuals/{person['id']}", world.staff)
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"].endswith("/damaged-record") and "texture_level" in body["detail"]
    assert "three" not in response.get_data(as_text=True)


def test_a_ciphertext_that_fails_authentication_is_a_409_problem(world):
    person = world.individual(texture_level=3, notes="Behöver sugrör")
    with world.runtime.db.transaction() as s:
        blob = s.scalar(select(individuals.c.notes).where(individuals.c.id == person["id"]))
        damaged = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        s.execute(update(individuals).where(individuals.c.id == person["id"]).values(notes=damaged))
    response = world.call("GET", f"/individuals/{person['id']}", world.staff)
    assert response.status_code == 409 and response.get_json()["type"].endswith("/damaged-record")


def test_unacceptable_text_in_a_name_is_a_field_level_422(world):
    for name in ("Greta\u0000Lindqvist", "\u202eGreta", "Greta\nLindqvist"):
        response = world.call("POST", path(world), world.admin, {"name": name})
        assert response.status_code == 422, name
        assert [e["field"] for e in response.get_json()["errors"]] == ["name"]
    raw = b'{"name": "Greta \\ud800"}'
    response = world.client.post(
        "/api/v1" + path(world), data=raw, content_type="application/json", headers=world.admin
    )
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "name"
    with world.runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(individuals)) == 0
