"""The GDPR wire protocol (shared/gdpr_protocol.py): pinned schemas and the exact messages on recept.gdpr.

Participants and the coordinator are deployed separately, so a message one side writes must stay
readable by the other side's previous release: the schemas are pinned in gdpr_protocol.json, and
the messages each type writes are pinned here key by key (DESIGN.md "Data-subject requests", R1, R2).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from shared.bus import GDPR
from shared.crypto import Keyring
from shared.errors import Invalid
from shared.gdpr_protocol import SCHEMAS, Announcement, Channel, Command, Reply, RequestKey, transport_public_key
from shared.privacy import handle_command
from tests.gdpr.participants import make_fake
from tests.support import outbox_messages

PINNED = Path(__file__).resolve().parent / "gdpr_protocol.json"
REQUEST, COMMAND = str(uuid.uuid4()), str(uuid.uuid4())
AT = "2026-03-01T10:00:00.000000Z"


def test_the_protocol_schemas_are_pinned():
    """A changed schema is a protocol change between separately deployed services.

    Regenerate with RECEPT_UPDATE_CONTRACTS=1 only after making sure both sides' previous
    releases read what the new one writes.
    """
    if os.environ.get("RECEPT_UPDATE_CONTRACTS"):
        PINNED.write_text(json.dumps(SCHEMAS, indent=2, sort_keys=True) + "\n")
    assert json.loads(PINNED.read_text()) == json.loads(json.dumps(SCHEMAS))


KEYRING = Keyring.generate()
REQUEST_KEY = RequestKey.generate()
CHANNEL = Channel.for_coordinator(REQUEST_KEY, transport_public_key(KEYRING), request_id=REQUEST, service="orders")


def _opened(wire: dict) -> Command:
    command, _channel = Command.from_wire(wire, keyring=KEYRING, service="orders")
    return command


def test_a_phase_one_command_carries_the_identifiers_sealed_and_no_references():
    """Issue 14: the identifiers never cross the broker in clear; only ids, action, phase and tenant do."""
    command = Command.for_phase(
        request_id=REQUEST,
        command_id=COMMAND,
        action="erase",
        phase="resolve",
        tenant="t1",
        identifiers={"email": "a@b.se"},
        references=["x:1"],
        at=AT,
    )
    wire = command.to_wire(CHANNEL)
    box = wire.pop("sealed")
    assert wire == {
        "request_id": REQUEST,
        "command_id": COMMAND,
        "action": "erase",
        "phase": "resolve",
        "tenant": "t1",
        "at": AT,
    }
    assert box["recipient"] == transport_public_key(KEYRING) and box["key"] == REQUEST_KEY.public
    assert "a@b.se" not in json.dumps(box)
    opened = _opened({**wire, "sealed": box})
    assert (opened.subject, opened.references) == ({"email": "a@b.se"}, [])
    assert command.message_id == COMMAND and Command.routing_key("orders") == "gdpr.command.orders"


def test_a_phase_two_command_carries_references_and_never_the_identifiers():
    command = Command.for_phase(
        request_id=REQUEST,
        command_id=COMMAND,
        action="export",
        phase="trail",
        tenant="t1",
        identifiers={"email": "a@b.se"},
        references=["x:1", "y:2"],
        at=AT,
    )
    opened = _opened(command.to_wire(CHANNEL))
    assert (opened.phase, opened.subject, opened.references) == ("trail", {}, ["x:1", "y:2"])


def test_a_sealed_command_without_a_phase_is_read_with_its_defaults():
    """No phase means phase one; unknown identifier kinds and empty values are dropped."""
    box = CHANNEL.seal("command", "cmd-1", {"subject": {"email": "a@b.se", "phone": "", "shoe_size": "42"}})
    channel = Channel.for_coordinator(REQUEST_KEY, transport_public_key(KEYRING), request_id="req-1", service="orders")
    box = channel.seal("command", "cmd-1", {"subject": {"email": "a@b.se", "phone": "", "shoe_size": "42"}})
    command, _ = Command.from_wire(
        {
            "request_id": "req-1",
            "command_id": "cmd-1",
            "action": "export",
            "tenant": None,
            "sealed": {"recipient": channel.recipient, "key": channel.ephemeral, "box": box},
        },
        keyring=KEYRING,
        service="orders",
    )
    assert (command.phase, command.subject, command.references, command.at) == (
        "resolve",
        {"email": "a@b.se"},
        [],
        None,
    )
    written = Command.for_phase(
        request_id=REQUEST,
        command_id=COMMAND,
        action="erase",
        phase="resolve",
        tenant="t1",
        identifiers={"personnummer": "198112189876"},
        references=[],
        at=AT,
    )
    assert _opened(written.to_wire(CHANNEL)) == written


@pytest.mark.parametrize("plaintext", [{"subject": {"email": "a@b.se"}}, {"references": ["x:1"]}, {}])
def test_a_command_that_is_not_sealed_is_refused(plaintext):
    """Issue 14: a coordinator (or anyone on the broker) sending identifiers in clear is refused."""
    sealed = Command.for_phase(
        request_id=REQUEST,
        command_id=COMMAND,
        action="erase",
        phase="resolve",
        tenant="t1",
        identifiers={"email": "a@b.se"},
        references=[],
        at=AT,
    ).to_wire(CHANNEL)
    message = {k: v for k, v in sealed.items() if k != "sealed"} if not plaintext else {**sealed, **plaintext}
    with pytest.raises(Invalid):
        Command.from_wire(message, keyring=KEYRING, service="orders")


def test_a_reply_names_its_command_seals_its_references_and_has_a_message_id_derived_from_it():
    participant = Channel.for_participant(
        KEYRING, recipient=CHANNEL.recipient, ephemeral=CHANNEL.ephemeral, request_id=REQUEST, service="orders"
    )
    command = _opened(
        Command.for_phase(
            request_id=REQUEST,
            command_id=COMMAND,
            action="erase",
            phase="trail",
            tenant=None,
            identifiers={},
            references=["x:1"],
            at=AT,
        ).to_wire(CHANNEL)
    )
    reply = Reply.done(
        command,
        service="orders",
        references=["x:1"],
        at=AT,
        erasure=[
            {
                "kind": "audit_entry",
                "action": "retained",
                "count": 3,
                "legal_basis": "accountability (GDPR art. 5(2))",
                "retain_until": "2033-12-31",
            }
        ],
    )
    wire = reply.to_wire(participant)
    box = wire.pop("sealed")
    assert wire == {
        "request_id": REQUEST,
        "command_id": COMMAND,
        "service": "orders",
        "action": "erase",
        "phase": "trail",
        "status": "done",
        "erasure": [
            {
                "kind": "audit_entry",
                "action": "retained",
                "count": 3,
                "legal_basis": "accountability (GDPR art. 5(2))",
                "retain_until": "2033-12-31",
            }
        ],
        "error": None,
        "at": AT,
    }
    assert "x:1" not in box
    # The same command handled again yields the same reply id, which the coordinator's inbox drops.
    assert reply.message_id == str(uuid.uuid5(uuid.NAMESPACE_URL, f"recept:reply:{COMMAND}"))
    assert Reply.routing_key("orders") == "gdpr.reply.orders"
    assert Reply.addressed({**wire, "sealed": box}) == (REQUEST, "orders")
    assert Reply.from_wire({**wire, "sealed": box}, CHANNEL) == reply


@pytest.mark.parametrize(
    "plaintext", [{"export": {"person": [{"email": "a@b.se"}]}}, {"references": ["x:1"]}, {"sealed": None}]
)
def test_a_done_reply_that_is_not_sealed_is_refused(plaintext):
    message = {
        "request_id": REQUEST,
        "command_id": COMMAND,
        "service": "orders",
        "action": "export",
        "phase": "resolve",
        "status": "done",
        "sealed": CHANNEL.seal("reply", COMMAND, {}),
        **plaintext,
    }
    with pytest.raises(Invalid):
        Reply.from_wire(message, CHANNEL)


def test_an_announcement_must_carry_its_own_services_declaration():
    inventory = {"service": "orders", "categories": [{"kind": "individual", "fields": []}]}
    announced = Announcement(
        service="orders",
        inventory=inventory,
        counts={"individual": 2},
        at=AT,
        transport_key=transport_public_key(KEYRING),
    )
    assert announced.to_wire() == {
        "service": "orders",
        "inventory": inventory,
        "counts": {"individual": 2},
        "phase": "resolve",
        "at": AT,
        "transport_key": transport_public_key(KEYRING),
    }
    assert Announcement.from_wire(announced.to_wire()) == announced
    assert Announcement.from_wire({"service": "orders", "inventory": inventory, "counts": {}}).phase == "resolve"
    with pytest.raises(Invalid) as info:
        Announcement.from_wire({"service": "crm", "inventory": inventory, "counts": {}})
    assert info.value.errors == [{"field": "inventory.service", "message": "must name the announcing service"}]


def test_an_announcement_may_carry_counts_per_tenant_numbers_only():
    """Issue 15 (art. 30(2)): optional, so the previous release's announcements (without) still read, and
    the previous coordinator ignores the extra key; only tenant slugs and non-negative integers."""
    inventory = {"service": "orders", "categories": [{"kind": "individual", "fields": []}]}
    announced = Announcement(
        service="orders", inventory=inventory, counts={"individual": 3}, at=AT, tenant_counts={"t1": {"individual": 3}}
    )
    wire = announced.to_wire()
    assert wire["tenant_counts"] == {"t1": {"individual": 3}}
    assert Announcement.from_wire(wire) == announced
    assert Announcement.from_wire({**wire, "tenant_counts": {}}).tenant_counts == {}
    assert Announcement.from_wire({k: v for k, v in wire.items() if k != "tenant_counts"}).tenant_counts is None
    for bad, field in (
        ({"t1": {"individual": -1}}, "tenant_counts.t1.individual"),
        ({"t1": {"individual": "Greta"}}, "tenant_counts.t1.individual"),
        ({"Greta Lindqvist": {"individual": 1}}, "tenant_counts"),
    ):
        with pytest.raises(Invalid) as info:
            Announcement.from_wire({**wire, "tenant_counts": bad})
        assert [e["field"] for e in info.value.errors] == [field]


@pytest.mark.parametrize(
    "kind, message, field",
    [
        ("command", {"request_id": REQUEST, "command_id": COMMAND, "action": "delete"}, "action"),
        (
            "command",
            {
                "request_id": REQUEST,
                "command_id": COMMAND,
                "action": "erase",
                "subject": {"email": "secret-" + "x" * 260},
            },
            "subject",
        ),
        ("command", {"request_id": REQUEST, "command_id": COMMAND, "action": "erase"}, "command"),
        ("command", {"request_id": REQUEST, "action": "erase"}, "command"),
        (
            "reply",
            {
                "request_id": REQUEST,
                "command_id": COMMAND,
                "service": "Orders!",
                "action": "erase",
                "phase": "resolve",
                "status": "done",
            },
            "service",
        ),
        (
            "reply",
            {
                "request_id": REQUEST,
                "command_id": COMMAND,
                "service": "orders",
                "action": "erase",
                "phase": "resolve",
                "status": "done",
                "erasure": [{"kind": "individual", "action": "forgotten", "count": 1}],
            },
            "erasure.0.action",
        ),
        (
            "announcement",
            {"service": "orders", "inventory": {"service": "orders", "categories": []}, "counts": {"individual": -1}},
            "counts.individual",
        ),
        ("announcement", ["not", "an", "object"], "announcement"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_field_never_the_value(kind, message, field):
    read = {
        "command": lambda m: Command.from_wire(m, keyring=KEYRING, service="orders"),
        "reply": lambda m: Reply.from_wire(m, CHANNEL),
        "announcement": Announcement.from_wire,
    }[kind]
    with pytest.raises(Invalid) as info:
        read(message)
    assert field in {e["field"] for e in info.value.errors}
    assert "secret" not in json.dumps(info.value.errors) + info.value.detail


def test_a_participant_answers_a_command_with_a_reply_the_coordinator_reads(tmp_path):
    """Both sides through the one module: the participant's outbox holds exactly what Reply.from_wire
    takes.  Issue 15: the preview answers with candidates and changes nothing; the acting command
    carries the confirmed refs, and only they are acted on."""
    fake = make_fake("alpha", f"sqlite:///{tmp_path / 'alpha.db'}", "memory://")
    try:
        ref = fake.add_person("karin@example.se", "Karin Karlsson")
        channel = Channel.for_coordinator(
            REQUEST_KEY, transport_public_key(fake.runtime.keyring), request_id=REQUEST, service="alpha"
        )

        def answer(phase: str, command_id: str, confirmed: list[str]) -> Reply:
            command = Command.for_phase(
                request_id=REQUEST,
                command_id=command_id,
                action="export",
                phase=phase,
                tenant="t1",
                identifiers={"email": "karin@example.se"},
                references=[],
                confirmed=confirmed,
                at=AT,
            )
            with fake.runtime.db.transaction() as s:
                handle_command(fake.runtime, s, command.to_wire(channel))
            wire = next(m for m in outbox_messages(fake.runtime, GDPR) if m["command_id"] == command_id)
            assert "Karin" not in json.dumps(wire) and "karin@example.se" not in json.dumps(wire)
            return Reply.from_wire(wire, channel)

        preview = answer("preview", str(uuid.uuid4()), [])
        assert preview.status == "done" and preview.references == [] and preview.export is None
        [candidate] = preview.candidates
        assert candidate["match"] == "exact" and candidate["count"] == 1 and "Karin" not in json.dumps(candidate)
        nothing = answer("resolve", str(uuid.uuid4()), [])
        assert nothing.references == [] and nothing.export == {"person": []} and nothing.stale == 0
        reply = answer("resolve", COMMAND, [candidate["ref"], "f" * 64])
        assert (reply.request_id, reply.command_id, reply.service, reply.status) == (REQUEST, COMMAND, "alpha", "done")
        assert reply.references == [ref] and reply.export["person"][0]["name"] == "Karin Karlsson"
        assert reply.stale == 1  # the made-up ref matches no candidate of the data as it is now
    finally:
        fake.close()


def test_a_participant_ignores_a_malformed_command_and_writes_nothing(tmp_path):
    """The coordinator could not read a reply to it either; nothing is done, nothing half-written."""
    fake = make_fake("alpha", f"sqlite:///{tmp_path / 'alpha.db'}", "memory://")
    try:
        fake.add_person("karin@example.se", "Karin Karlsson")
        with fake.runtime.db.transaction() as s:
            handle_command(
                fake.runtime,
                s,
                {
                    "request_id": REQUEST,
                    "command_id": COMMAND,
                    "action": "delete",
                    "subject": {"email": "karin@example.se"},
                },
            )
        assert outbox_messages(fake.runtime, GDPR) == []
        assert [p["email"] for p in fake.people()] == ["karin@example.se"]
    finally:
        fake.close()
