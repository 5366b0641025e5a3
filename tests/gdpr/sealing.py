"""Test helpers for the sealed gdpr protocol (issue 14): play the coordinator towards a participant
(seal a command for it, open its reply) or a participant towards the coordinator (open a command,
seal a reply), through shared.gdpr_protocol only."""

from __future__ import annotations

from typing import Any

from shared.gdpr_protocol import Channel, Command, Reply, RequestKey, transport_public_key

# One ephemeral key per request id, as the coordinator keeps one per request.
_REQUEST_KEYS: dict[str, RequestKey] = {}


def coordinator_channel(runtime, request_id: str) -> Channel:
    """The channel the coordinator would use for ``runtime``'s service in ``request_id``."""
    key = _REQUEST_KEYS.setdefault(request_id, RequestKey.generate())
    return Channel.for_coordinator(
        key, transport_public_key(runtime.keyring), request_id=request_id, service=runtime.name
    )


def sealed_command(runtime, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` in the old plaintext shape (subject, references) as the coordinator sends it now."""
    command = Command(
        request_id=message["request_id"],
        command_id=message["command_id"],
        action=message["action"],
        phase=message.get("phase") or "resolve",
        tenant=message.get("tenant"),
        subject=dict(message.get("subject") or {}),
        references=list(message.get("references") or []),
        confirmed=list(message.get("confirmed") or []),
        at=message.get("at"),
    )
    return command.to_wire(coordinator_channel(runtime, command.request_id))


def opened_reply(runtime, wire: dict[str, Any]) -> dict[str, Any]:
    """A participant's sealed reply in the plaintext shape (references and export inline)."""
    reply = Reply.from_wire(wire, coordinator_channel(runtime, wire["request_id"]))
    return {
        **{k: v for k, v in wire.items() if k != "sealed"},
        "references": reply.references,
        "export": reply.export,
        "candidates": reply.candidates,
    }


def opened_command(keyring, service: str, wire: dict[str, Any]) -> dict[str, Any]:
    """A sealed command as ``service`` reads it, in the plaintext shape."""
    command, _channel = Command.from_wire(wire, keyring=keyring, service=service)
    return {
        **{k: v for k, v in wire.items() if k != "sealed"},
        "subject": command.subject,
        "references": command.references,
        "confirmed": command.confirmed,
        "service": service,
    }


def sealed_reply(keyring, service: str, command_wire: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """A reply of ``service`` to ``command_wire``, given in the plaintext shape, sealed as a participant does."""
    command, channel = Command.from_wire(command_wire, keyring=keyring, service=service)
    reply = Reply(
        request_id=message["request_id"],
        command_id=message["command_id"],
        service=message["service"],
        action=message["action"],
        phase=message["phase"],
        status=message["status"],
        references=list(message.get("references") or []),
        export=message.get("export"),
        erasure=message.get("erasure"),
        error=message.get("error"),
        at=message.get("at"),
        candidates=message.get("candidates"),
        stale=message.get("stale"),
    )
    return reply.to_wire(channel)


def confirm_exact(runtime, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` (plaintext shape, phase resolve) with the refs of its exact candidates confirmed, as an
    approver who recognises the person in the preview does (issue 15); reads, changes nothing."""
    from shared.privacy import CandidateRefs, Context, candidates_of

    ctx = Context(request_id=message["request_id"], tenant=message.get("tenant"), subject=dict(message["subject"]))
    refs = CandidateRefs(runtime.keyring.index_key)
    with runtime.db.transaction() as s:
        found = candidates_of(runtime.participant, s, ctx)
    return {**message, "confirmed": [refs(ctx.request_id, c) for c in found if c.match == "exact"]}
