"""The erasure certificate (issue 15, R2, R9): canonical form, Ed25519 signature and tamper detection; the
anchor to the audit's signed checkpoint of the tenant; the API (readers, another tenant's privacy officer,
the public key, verification) and the offline CLI check."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.gdpr import certificate
from services.gdpr.certificate import CertificateKeys, body_of, canonical, problem
from services.gdpr.cli import main
from services.gdpr.models import audit_checkpoints
from shared.clock import rfc3339, utcnow
from shared.crypto import Keyring
from shared.errors import Conflict
from tests.gdpr.test_requests import Gdpr

RETAINED = {
    "kind": "invoice",
    "action": "retained",
    "count": 2,
    "legal_basis": "Bokföringslagen 7 kap. 2 §",
    "retain_until": "2033-12-31",
}
DOCUMENT = {
    "id": "6f1c7a55-8d0e-4c35-9a51-0e7f1d2b3c4d",
    "type": "erase",
    "tenant": "ekby",
    "status": "completed",
    "created_at": "2026-03-02T10:00:00.000000Z",
    "finished_at": "2026-03-03T09:00:00.000000Z",
    "requested_by": "user-1",
    "decided_by": "user-2",
    "services": [
        {
            "service": "orders",
            "status": "done",
            "erasure": [{"kind": "person", "action": "deleted", "count": 1}, RETAINED],
        },
        {"service": "crm", "status": "done", "erasure": [{"kind": "contact", "action": "anonymised", "count": 3}]},
    ],
    "instruction": {"given_by": "privacy_officer", "given_at": "2026-03-02T10:00:00.000000Z", "reference": "x"},
    "agreement": {"version": "DPA 2.0", "signed_on": "2025-06-01"},
    "opened_by": {"role": "compliance_officer", "tenant": "vendor", "at": "2026-03-02T10:00:00Z"},
    "approvals": [
        {"step": "approved", "role": "compliance_officer", "tenant": "vendor", "at": "2026-03-02T11:00:00Z"},
        {"step": "confirmed", "role": "privacy_officer", "tenant": "ekby", "at": "2026-03-02T12:00:00Z"},
    ],
    "preview": None,
    "preview_hash": "ab" * 32,
    "anchor": {
        "chain": "tenant:ekby",
        "seq": 41,
        "head_hash": "cd" * 32,
        "key_id": "k",
        "signature": "c2ln",
        "signed_at": "2026-03-03T09:00:05.000000Z",
    },
}


@pytest.fixture
def keys() -> CertificateKeys:
    return CertificateKeys.from_keyring(Keyring.generate())


# --- the pure parts ---------------------------------------------------------------------------------


def test_the_certificate_holds_the_facts_and_no_user_id(keys):
    signed = certificate.certificate_for(DOCUMENT, keys)
    body = signed["certificate"]
    assert (body["request_id"], body["type"], body["tenant"], body["status"]) == (
        DOCUMENT["id"],
        "erase",
        "ekby",
        "completed",
    )
    assert (body["received_at"], body["completed_at"]) == (DOCUMENT["created_at"], DOCUMENT["finished_at"])
    assert [r["service"] for r in body["results"]] == ["crm", "orders"]  # sorted: one canonical form
    assert body["results"][1]["erasure"][0] == {
        "kind": "person",
        "action": "deleted",
        "count": 1,
        "legal_basis": None,
        "retain_until": None,
    }
    assert body["retained"] == [{"service": "orders", **RETAINED}]
    assert body["approvals"] == DOCUMENT["approvals"] and body["preview_hash"] == "ab" * 32
    assert body["opened_by"] == DOCUMENT["opened_by"]  # both pairs of eyes, by role and tenant
    assert body["anchor"]["seq"] == 41 and body["agreement"] == DOCUMENT["agreement"]
    assert "user-1" not in json.dumps(signed) and "user-2" not in json.dumps(signed)
    assert signed["signature"]["key_id"] == keys.key_id and signed["format"] == certificate.FORMAT
    assert problem(signed, keys.public_keys) is None


def test_the_canonical_form_does_not_depend_on_key_order_and_signing_is_deterministic(keys):
    reordered = dict(reversed(list(body_of(DOCUMENT).items())))
    assert canonical(reordered) == canonical(body_of(DOCUMENT))
    assert canonical({"b": "å", "a": [1, 2]}) == '{"a":[1,2],"b":"å"}'.encode()
    assert keys.sign(reordered) == keys.sign(body_of(DOCUMENT))  # Ed25519 is deterministic


def test_tampering_is_detected(keys):
    signed = keys.sign(body_of(DOCUMENT))
    changed_count = copy.deepcopy(signed)
    changed_count["certificate"]["results"][0]["erasure"][0]["count"] = 0
    assert problem(changed_count, keys.public_keys).startswith("bad signature")
    removed_approval = copy.deepcopy(signed)
    removed_approval["certificate"]["approvals"].pop()
    assert problem(removed_approval, keys.public_keys).startswith("bad signature")
    other = CertificateKeys.from_keyring(Keyring.generate())
    assert problem(signed, other.public_keys) == "signed with an unknown key"
    # The wrong key claiming the right key id still fails.
    (wrong,) = other.public_keys.values()
    assert problem(signed, {keys.key_id: wrong}).startswith("bad signature")
    assert problem({**signed, "format": "x"}, keys.public_keys).startswith("not an erasure certificate")
    assert problem({**signed, "extra": 1}, keys.public_keys).startswith("malformed")
    assert problem("nonsense", keys.public_keys).startswith("not an erasure certificate")
    broken_text = copy.deepcopy(signed)
    broken_text["certificate"]["tenant"] = "\ud800"  # a lone surrogate (JSON allows it, UTF-8 does not)
    assert problem(broken_text, keys.public_keys).startswith("malformed")


def test_a_rotated_index_key_still_verifies_old_certificates():
    keyring = Keyring.generate()
    old = CertificateKeys.from_keyring(keyring)
    new = CertificateKeys.from_keyring(keyring.rotated_index())
    assert new.key_id != old.key_id and old.key_id in new.public_keys
    assert problem(old.sign(body_of(DOCUMENT)), new.public_keys) is None
    assert [k["current"] for k in new.document()["keys"]] == [True, False]


def test_no_certificate_before_it_is_finished_and_anchored(keys):
    with pytest.raises(Conflict, match="only erasure"):
        certificate.certificate_for({**DOCUMENT, "type": "export"}, keys)
    with pytest.raises(Conflict, match="in_progress"):
        certificate.certificate_for({**DOCUMENT, "status": "in_progress"}, keys)
    with pytest.raises(Conflict, match="not anchored yet"):
        certificate.certificate_for({**DOCUMENT, "anchor": None}, keys)
    early = {**DOCUMENT["anchor"], "signed_at": "2026-03-03T08:59:59.000000Z"}
    with pytest.raises(Conflict, match="not anchored yet"):
        certificate.certificate_for({**DOCUMENT, "anchor": early}, keys)
    assert certificate.certificate_for({**DOCUMENT, "status": "partially_completed"}, keys)


# --- through the API and the CLI --------------------------------------------------------------------


def checkpoint_event(tenant: str, seq: int, signed_at: str) -> dict:
    return {
        "type": "audit.checkpoint.signed",
        "tenant": tenant,
        "data": {
            "chain": f"tenant:{tenant}",
            "seq": seq,
            "head_hash": f"{seq:064x}",
            "key_id": "0" * 32,
            "signature": "c2lnbmF0dXJl",
            "signed_at": signed_at,
        },
    }


def po(service: Gdpr, tenant: str = "t1") -> dict:
    return service.headers(user=f"po-{tenant}", tenant=tenant, roles=("privacy_officer",))


def test_a_finished_erasure_gets_a_certificate_once_the_audit_signed_a_checkpoint(
    database_url, tmp_path, monkeypatch, capsys
):
    """On SQLite and PostgreSQL (the anchor's time comparisons run in SQL)."""
    service = Gdpr(database_url)
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        request_id = service.open("erase", tenant="t1", approve=True).json["id"]
        url = f"/api/v1/requests/{request_id}/certificate"
        (command,) = service.commands()
        (handler,) = [s.handler for s in service.rt.wiring.subscriptions if s.pattern == "audit.checkpoint.signed"]
        # Before it finished: a checkpoint then does not anchor it.
        with service.rt.db.transaction() as s:
            handler(s, checkpoint_event("t1", 3, rfc3339(utcnow())))
        service.reply(command, service="alpha", erasure=[{"kind": "person", "action": "deleted", "count": 1}, RETAINED])
        assert service.view(request_id)["status"] == "completed"
        pending = service.client.get(url, headers=service.headers())
        assert pending.status_code == 409 and "not anchored yet" in pending.json["detail"]
        assert "certificate" not in service.view(request_id)["links"]
        later = rfc3339(utcnow() + timedelta(seconds=5))
        with service.rt.db.transaction() as s:
            handler(s, checkpoint_event("t2", 9, later))  # another tenant's chain anchors nothing here
            handler(s, {**checkpoint_event("t1", 9, later), "data": {"chain": "vendor"}})  # ignored
            handler(s, checkpoint_event("t1", 7, later))
            handler(s, checkpoint_event("t1", 8, rfc3339(utcnow() + timedelta(seconds=9))))  # the first one stays
        assert service.view(request_id)["links"]["certificate"].endswith(url)
        with service.rt.db.transaction() as s:
            latest = {r.tenant: r.seq for r in s.execute(select(audit_checkpoints))}
        assert latest == {"t1": 8, "t2": 9}  # the latest per tenant; the vendor chain's is not a tenant's
        answer = service.client.get(url, headers=service.headers())
        assert answer.status_code == 200, answer.json
        signed = answer.json
        body = signed["certificate"]
        assert body["anchor"]["seq"] == 7 and body["anchor"]["chain"] == "tenant:t1"
        assert body["results"] == [
            {
                "service": "alpha",
                "status": "done",
                "erasure": [
                    {"kind": "person", "action": "deleted", "count": 1, "legal_basis": None, "retain_until": None},
                    RETAINED,
                ],
            }
        ]
        assert body["retained"] == [{"service": "alpha", **RETAINED}]
        assert [a["step"] for a in body["approvals"]] == ["approved"] and body["preview_hash"]
        assert service.officer not in json.dumps(signed) and service.other_officer not in json.dumps(signed)
        # The tenant's privacy officer reads it; another tenant's does not see the request at all.
        assert service.client.get(url, headers=po(service)).json == signed
        assert service.client.get(url, headers=po(service, "t2")).status_code == 404
        assert service.client.get(url).status_code == 401
        # The public key needs no token; verification answers valid or why not.
        published = service.client.get("/api/v1/certificates/key")
        assert published.status_code == 200 and published.json["key_id"] == signed["signature"]["key_id"]
        verify = service.client.post("/api/v1/certificates/verify", json=signed).json
        assert verify == {"valid": True, "reason": "valid", "key_id": signed["signature"]["key_id"]}
        forged = copy.deepcopy(signed)
        forged["certificate"]["results"][0]["erasure"][0]["count"] = 5
        verdict = service.client.post("/api/v1/certificates/verify", json=forged).json
        assert verdict["valid"] is False and verdict["reason"].startswith("bad signature")
        bad = service.client.post("/api/v1/certificates/verify", json={"format": 1})
        assert bad.status_code == 422

        # Offline: the file and the public key, nothing else.
        monkeypatch.delenv("RECEPT_GDPR_KEYRING", raising=False)
        monkeypatch.setenv("RECEPT_GDPR_DATABASE_URL", "postgresql://nowhere.invalid/none")
        cert_file, key_file = tmp_path / "certificate.json", tmp_path / "key.pem"
        cert_file.write_text(json.dumps(signed))
        key_file.write_text(published.json["keys"][0]["pem"])
        assert main(["verify-certificate", str(cert_file), "--key", str(key_file)]) == 0
        assert capsys.readouterr().out.startswith(f"VALID: erasure {request_id} of tenant t1")
        (tmp_path / "forged.json").write_text(json.dumps(forged))
        assert main(["verify-certificate", str(tmp_path / "forged.json"), "--key", str(key_file)]) == 1
        assert "INVALID: bad signature" in capsys.readouterr().err
        other = tmp_path / "other.pem"
        (other_key,) = CertificateKeys.from_keyring(Keyring.generate()).public_keys.values()
        other.write_text(certificate.public_pem(other_key))
        assert main(["verify-certificate", str(cert_file), "--key", str(other)]) == 1
        assert "unknown key" in capsys.readouterr().err
        (tmp_path / "junk.json").write_text("{not json")
        assert main(["verify-certificate", str(tmp_path / "junk.json"), "--key", str(key_file)]) == 2
        assert main(["verify-certificate", str(cert_file), "--key", str(cert_file)]) == 2
        # Without --key: the keyring of the service itself.
        monkeypatch.setenv("RECEPT_GDPR_KEYRING", service.rt.keyring.to_json())
        assert main(["verify-certificate", str(cert_file)]) == 0
    finally:
        service.rt.db.dispose()


def test_exports_and_unfinished_erasures_have_no_certificate(tmp_path):
    service = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        erase = service.open("erase", tenant="t1", approve=True).json["id"]
        answer = service.client.get(f"/api/v1/requests/{erase}/certificate", headers=service.headers())
        assert answer.status_code == 409 and "in_progress" in answer.json["detail"]
        export = service.open("export", tenant="t1").json["id"]
        answer = service.client.get(f"/api/v1/requests/{export}/certificate", headers=service.headers())
        assert answer.status_code == 409 and "only erasure" in answer.json["detail"]
        missing = service.client.get(
            "/api/v1/requests/00000000-0000-0000-0000-000000000000/certificate", headers=service.headers()
        )
        assert missing.status_code == 404
    finally:
        service.rt.db.dispose()


def test_the_anchor_is_the_audits_own_signed_checkpoint(tmp_path, capsys):
    """The event the real audit ledger publishes anchors the certificate, and the anchor's signature is the
    audit's checkpoint signature (checkable with the audit's public key)."""
    from services.audit import SPEC as AUDIT
    from services.audit.checkpoints import Signer, public_pem
    from services.audit.domain import to_entry
    from tests.audit.conftest import Events, write_key
    from tests.support import TokenMint, events_of, make_runtime

    service = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    audit = make_runtime(
        AUDIT,
        f"sqlite:///{tmp_path / 'audit.db'}",
        mint=TokenMint(),
        CHECKPOINT_KEY_FILE=str(write_key(tmp_path / "audit.pem")),
        CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
    )
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        request_id = service.open("erase", tenant="t1", approve=True).json["id"]
        (command,) = service.commands()
        service.reply(command, service="alpha")
        with audit.db.transaction() as s:
            audit.domain.ingest(s, [to_entry(Events()(tenant="t1"))])
        audit.domain.checkpoint(force=True)
        (published,) = events_of(audit, "audit.checkpoint.signed")
        (handler,) = [s.handler for s in service.rt.wiring.subscriptions if s.pattern == "audit.checkpoint.signed"]
        with service.rt.db.transaction() as s:
            handler(s, published)
        anchor = service.client.get(f"/api/v1/requests/{request_id}/certificate", headers=service.headers()).json[
            "certificate"
        ]["anchor"]
        assert anchor == published["data"] and anchor["chain"] == "tenant:t1"
        assert audit.domain.trusted.problem(anchor) is None
        assert audit.domain.trusted.problem({**anchor, "head_hash": "0" * 64}) == "bad_signature"
        # Offline, with the audit's public key as `./recept audit public-key` prints it.
        signed = service.client.get(f"/api/v1/requests/{request_id}/certificate", headers=service.headers()).json
        cert_file, key_file, audit_key = tmp_path / "c.json", tmp_path / "gdpr.pem", tmp_path / "audit-public.pem"
        cert_file.write_text(json.dumps(signed))
        key_file.write_text(service.client.get("/api/v1/certificates/key").json["keys"][0]["pem"])
        audit_key.write_text(public_pem(audit.domain.signer.public_key))
        args = ["verify-certificate", str(cert_file), "--key", str(key_file), "--audit-key", str(audit_key)]
        assert main(args) == 0
        assert "checked with the audit's key" in capsys.readouterr().out
        # Another audit key (or a made-up anchor, re-signed by nobody) fails on the anchor.
        other_audit = tmp_path / "other-audit.pem"
        other_audit.write_text(public_pem(Signer.from_file(write_key(tmp_path / "other.pem")).public_key))
        assert main([*args[:-1], str(other_audit)]) == 1
        assert "anchor: bad checkpoint signature" in capsys.readouterr().err
    finally:
        service.rt.db.dispose()
        audit.db.dispose()
