"""GDPR participation (R1, R2, R3): resolve, export and erase a person's login data."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import func, select

from services.auth.models import login_history, refresh_tokens, user_roles, users
from shared.bus import GDPR
from shared.privacy import handle_command
from tests.auth.conftest import PASSWORD
from tests.conftest import raw_dump
from tests.gdpr.sealing import confirm_exact, opened_reply, sealed_command
from tests.support import assert_no_plaintext, events_of


def command(harness, action: str, subject: dict, tenant: str | None = "north") -> dict:
    message = {
        "request_id": str(uuid.uuid4()),
        "command_id": str(uuid.uuid4()),
        "action": action,
        "phase": "resolve",
        "tenant": tenant,
        "subject": subject,
    }
    message = confirm_exact(harness.runtime, message)  # approved after the preview (issue 15)
    with harness.runtime.db.transaction() as s:
        handle_command(harness.runtime, s, sealed_command(harness.runtime, message))  # sealed as the gdpr service does
    (reply,) = [m for m in gdpr_replies(harness.runtime) if m["command_id"] == message["command_id"]]
    return opened_reply(harness.runtime, reply)


def gdpr_replies(runtime) -> list[dict]:
    """The replies in the outbox; export replies carry personal data, so the outbox may seal them."""
    table = runtime.tables.outbox
    with runtime.db.transaction() as s:
        rows = s.execute(
            select(table.c.message_id, table.c.payload).where(table.c.exchange == GDPR).order_by(table.c.id)
        ).all()
    cipher = getattr(runtime.outbox, "cipher", None)
    return [json.loads(cipher.open(r.message_id, bytes(r.payload)) if cipher else bytes(r.payload)) for r in rows]


def test_inventory_declares_every_kind_with_purpose_legal_basis_and_role(harness):
    """R3/R5/R6: each field's purpose is declared; the vendor is controller for login data."""
    inventory = harness.runtime.participant.inventory.as_dict()
    kinds = {c["kind"]: c for c in inventory["categories"]}
    assert {"user_account", "login_history", "session", "agreement_signatory"} <= set(kinds)
    for category in inventory["categories"]:
        assert category["purposes"] and category["legal_basis"] and category["retention"]
        assert category["role"] == "controller"
        assert all(f["description"] for f in category["fields"])
    account_fields = {f["name"]: f for f in kinds["user_account"]["fields"]}
    assert account_fields["email"]["encrypted"] and account_fields["email"]["blind_indexed"]
    with harness.runtime.db.transaction() as s:
        assert harness.runtime.participant.counts(s)["user_account"] == 0


def test_export_finds_the_person_by_email_or_username_with_login_history(both):
    """R1: the account and its login history, decrypted, for this tenant only."""
    both.tenant("north")
    both.tenant("south")
    user = both.user("north", "greta", email="greta@north.test", display_name="Greta Garbosson")
    both.user("south", "greta", email="greta@north.test")  # same person elsewhere: another tenant's data
    both.login("north", "greta", PASSWORD)
    both.login("north", "greta", "a-wrong-password")
    by_email = command(both, "export", {"email": "Greta@North.test"})
    assert by_email["status"] == "done" and by_email["references"] == [f"auth:user:{user['id']}"]
    (account,) = by_email["export"]["user_account"]
    assert (account["username"], account["display_name"], account["email"]) == (
        "greta",
        "Greta Garbosson",
        "greta@north.test",
    )
    assert [h["outcome"] for h in by_email["export"]["login_history"]] == ["succeeded", "failed"]
    assert len(by_email["export"]["session"]) == 1
    assert "token_hash" not in str(by_email["export"])
    assert command(both, "export", {"username": "GRETA"})["references"] == [f"auth:user:{user['id']}"]
    assert command(both, "export", {"email": "nobody@north.test"})["references"] == []
    # Per customer (issue 15, art. 30(2)): north's account, its two logins and one session; south's account.
    with both.runtime.db.transaction() as s:
        per_tenant = both.runtime.participant.tenant_counts(s)
    assert per_tenant["north"] == {"user_account": 1, "login_history": 2, "session": 1}
    assert per_tenant["south"] == {"user_account": 1}


def test_erase_disables_then_deletes_the_account_and_anonymises_its_history(both):
    """R2: the reply says what was done per kind; the person is unreadable everywhere afterwards."""
    both.tenant("north")
    user = both.user(
        "north",
        "hilda.erased",
        email="hilda.erased@north.test",
        display_name="Hilda Erasedsson",
        roles=["staff", "tenant_admin"],
    )
    tokens = both.login("north", "hilda.erased", PASSWORD).json
    both.login("north", "hilda.erased", "a-wrong-password")
    reply = command(both, "erase", {"email": "hilda.erased@north.test"})
    assert reply["status"] == "done"
    assert reply["erasure"] == [
        {"kind": "user_account", "action": "deleted", "count": 1},
        {"kind": "session", "action": "deleted", "count": 1},
        {"kind": "login_history", "action": "anonymised", "count": 2},
    ]
    with both.runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(users)) == 0
        assert s.scalar(select(func.count()).select_from(user_roles)) == 0
        assert s.scalar(select(func.count()).select_from(refresh_tokens)) == 0
        assert (
            s.scalar(select(func.count()).select_from(login_history).where(login_history.c.user_id.is_not(None))) == 0
        )
        assert s.scalar(select(func.count()).select_from(login_history)) == 2
        assert both.runtime.vault.is_shredded(s, f"auth:user:{user['id']}")
    types = [e["type"] for e in events_of(both.runtime) if e["subject"] == f"auth:user:{user['id']}"]
    assert types[-3:] == ["auth.user.disabled", "auth.session.revoked", "auth.user.deleted"]
    assert both.login("north", "hilda.erased", PASSWORD).status_code == 401
    assert both.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # A repeated command finds nothing and reports zero.
    again = command(both, "erase", {"email": "hilda.erased@north.test"})
    assert [item["count"] for item in again["erasure"]] == [0, 0, 0]
    both.runtime.db.dispose()
    assert_no_plaintext(raw_dump(both.url), ["hilda.erased", "Hilda Erasedsson"])
