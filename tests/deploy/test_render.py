"""deploy/render.py: every generated file is current, and the permission regexes it writes are exact."""

from __future__ import annotations

import re

import pytest

from deploy import render
from deploy.topology import ServiceTopology, _literal
from shared.bus import DLX, EVENTS, GDPR


def test_every_generated_file_is_current(capsys):
    """Definitions, manifests and the settings table of docs/deploy.md follow the code."""
    assert render.main(["--check"]) == 0, capsys.readouterr().out + "run `python -m deploy.render`"


def test_settings_table_lists_every_setting_of_every_service():
    from services import SERVICES, load

    table = render.render_settings_table()
    for name in SERVICES:
        for setting in load(name).config(env={}).settings.values():
            assert setting.name in table


def _topology(bindings) -> ServiceTopology:
    return ServiceTopology("crm", {}, {}, tuple(bindings))


def test_permission_regexes_match_whole_names_only():
    perms = _topology(
        [(GDPR, "recept.q.crm", "gdpr.command.crm"), (DLX, "recept.q.crm.dead", "dead.crm")]
    ).permissions()
    read = re.compile(perms["read"])
    assert read.match("recept.q.crm") and read.match(GDPR) and read.match(DLX)
    assert not read.match("recept.q.crm.dead") and not read.match("recept.q.crmx") and not read.match(EVENTS)
    assert not re.match(perms["configure"], "recept.q.orders")


def test_topic_permissions_let_a_participant_reply_only_as_itself():
    topics = {t["exchange"]: t for t in _topology([(GDPR, "recept.q.crm", "gdpr.command.crm")]).topic_permissions()}
    assert re.match(topics[GDPR]["write"], "gdpr.reply.crm")
    assert not re.match(topics[GDPR]["write"], "gdpr.reply.orders")
    assert not re.match(topics[GDPR]["write"], "gdpr.command.orders")
    assert re.match(topics[EVENTS]["write"], "crm.person.erased")
    assert not re.match(topics[EVENTS]["write"], "orders.order.placed")
    assert topics[EVENTS]["read"] == "^$"  # crm binds nothing on recept.events


def test_routing_patterns_outside_the_known_alphabet_are_refused():
    with pytest.raises(ValueError):
        _literal("orders.(placed|changed)")
