"""Sealing of gdpr messages end to end (shared/gdpr_protocol.py, docs/crypto.md, issue 14): what the
coordinator seals for one participant opens there and nowhere else, and only in its own message."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from shared.crypto import Keyring
from shared.errors import Invalid
from shared.gdpr_protocol import Channel, RequestKey, transport_keys, transport_private_key, transport_public_key

REQUEST, COMMAND = str(uuid.uuid4()), str(uuid.uuid4())
SUBJECT = {"email": "sealed.person@example.se", "personnummer": "199001011234"}


def _pair(keyring: Keyring, request_key: RequestKey, service: str = "orders", request_id: str = REQUEST):
    coordinator = Channel.for_coordinator(
        request_key, transport_public_key(keyring), request_id=request_id, service=service
    )
    participant = Channel.for_participant(
        keyring,
        recipient=transport_public_key(keyring),
        ephemeral=request_key.public,
        request_id=request_id,
        service=service,
    )
    return coordinator, participant


def test_both_ends_derive_one_key_and_the_sealed_text_shows_nothing():
    keyring, request_key = Keyring.generate(), RequestKey.generate()
    coordinator, participant = _pair(keyring, request_key)
    assert coordinator.key == participant.key and len(coordinator.key) == 32
    sealed = coordinator.seal("command", COMMAND, SUBJECT)
    assert participant.open("command", COMMAND, sealed) == SUBJECT
    reply = participant.seal("reply", COMMAND, {"export": {"individual": [{"diet": "glutenfri"}]}})
    assert coordinator.open("reply", COMMAND, reply)["export"]["individual"][0]["diet"] == "glutenfri"
    raw = base64.b64decode(sealed) + base64.b64decode(reply)
    for value in ("sealed.person", "199001011234", "glutenfri"):
        assert value.encode() not in raw and value not in sealed + reply
    # A fresh nonce each time: the same subject never seals to the same text twice.
    assert coordinator.seal("command", COMMAND, SUBJECT) != sealed


@pytest.mark.parametrize("moved", ["kind", "command", "service", "request"])
def test_a_sealed_part_opens_only_in_its_own_message(moved):
    """The associated data is the message type, request id, command id and service."""
    keyring, request_key = Keyring.generate(), RequestKey.generate()
    coordinator, participant = _pair(keyring, request_key)
    sealed = coordinator.seal("command", COMMAND, SUBJECT)
    kind, command_id = (
        ("reply" if moved == "kind" else "command"),
        (str(uuid.uuid4()) if moved == "command" else COMMAND),
    )
    if moved in ("service", "request"):
        _, participant = _pair(
            keyring,
            request_key,
            service="crm" if moved == "service" else "orders",
            request_id=str(uuid.uuid4()) if moved == "request" else REQUEST,
        )
    with pytest.raises(Invalid) as info:
        participant.open(kind, command_id, sealed)
    assert "sealed.person" not in json.dumps(info.value.errors) + info.value.detail


def test_a_tampered_or_malformed_box_is_refused():
    keyring, request_key = Keyring.generate(), RequestKey.generate()
    coordinator, participant = _pair(keyring, request_key)
    raw = bytearray(base64.b64decode(coordinator.seal("command", COMMAND, SUBJECT)))
    raw[-1] ^= 1
    for bad in (base64.b64encode(bytes(raw)).decode(), "not base64!", "", None, 42):
        with pytest.raises(Invalid):
            participant.open("command", COMMAND, bad)


def test_another_participant_or_an_unusable_key_cannot_open_it():
    keyring, other, request_key = Keyring.generate(), Keyring.generate(), RequestKey.generate()
    coordinator, _ = _pair(keyring, request_key)
    sealed = coordinator.seal("command", COMMAND, SUBJECT)
    with pytest.raises(Invalid):
        Channel.for_participant(
            other,
            recipient=transport_public_key(keyring),
            ephemeral=request_key.public,
            request_id=REQUEST,
            service="orders",
        )
    wrong = Channel.for_participant(
        other, recipient=transport_public_key(other), ephemeral=request_key.public, request_id=REQUEST, service="orders"
    )
    with pytest.raises(Invalid):
        wrong.open("command", COMMAND, sealed)
    for unusable in (base64.b64encode(bytes(32)).decode(), base64.b64encode(b"short").decode(), "%%"):
        with pytest.raises(Invalid):
            Channel.for_coordinator(request_key, unusable, request_id=REQUEST, service="orders")


def test_the_static_key_follows_the_keyring_and_survives_rotation_until_the_old_kek_is_retired():
    keyring = Keyring.generate()
    same = Keyring.from_json(keyring.to_json())
    assert transport_public_key(keyring) == transport_public_key(same)  # derived, nothing stored
    rotated = keyring.rotated()
    assert transport_public_key(rotated) != transport_public_key(keyring)
    old_public = transport_public_key(keyring)
    assert old_public in transport_keys(rotated)  # a command sealed before rotation
    request_key = RequestKey.generate()
    coordinator = Channel.for_coordinator(request_key, old_public, request_id=REQUEST, service="orders")
    sealed = coordinator.seal("command", COMMAND, SUBJECT)
    opened = Channel.for_participant(
        rotated, recipient=old_public, ephemeral=request_key.public, request_id=REQUEST, service="orders"
    )
    assert opened.open("command", COMMAND, sealed) == SUBJECT
    retired = rotated.without(keyring.primary_id)
    assert old_public not in transport_keys(retired)
    with pytest.raises(Invalid):
        Channel.for_participant(
            retired, recipient=old_public, ephemeral=request_key.public, request_id=REQUEST, service="orders"
        )
    assert transport_private_key(keyring).private_bytes_raw() != keyring.primary  # not the KEK itself


def test_the_request_key_round_trips_and_without_it_the_reply_stays_shut():
    keyring, request_key = Keyring.generate(), RequestKey.generate()
    restored = RequestKey.from_bytes(request_key.to_bytes())
    assert restored.public == request_key.public and len(request_key.to_bytes()) == 32
    _, participant = _pair(keyring, request_key)
    reply = participant.seal("reply", COMMAND, {"export": {"x": [1]}})
    assert Channel.for_coordinator(restored, transport_public_key(keyring), request_id=REQUEST, service="orders").open(
        "reply", COMMAND, reply
    ) == {"export": {"x": [1]}}
    # Once the request key is shredded, a new one (all the coordinator could make) does not open it.
    with pytest.raises(Invalid):
        Channel.for_coordinator(
            RequestKey.generate(), transport_public_key(keyring), request_id=REQUEST, service="orders"
        ).open("reply", COMMAND, reply)
