"""The portal's server-side sessions on SQLite and PostgreSQL: tokens encrypted at rest, expiry, shredding."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from services.portal import SPEC
from services.portal.sessions import SessionStore, Tokens
from tests.conftest import raw_dump
from tests.portal.conftest import Clock
from tests.support import assert_no_plaintext, make_runtime

ACCESS = "eyJhbGciOiJFZERTQSJ9.access-token-for-the-test.signature"
REFRESH = "refresh-token-for-the-test-0123456789"
USERNAME = "alice.officer"


@pytest.fixture
def store(database_url):
    runtime = make_runtime(SPEC, database_url)
    clock = Clock()
    yield (
        SessionStore(runtime.db, runtime.vault, idle=timedelta(minutes=30), lifetime=timedelta(hours=12), clock=clock),
        runtime,
        clock,
    )
    runtime.db.dispose()


def open_session(store: SessionStore) -> str:
    return store.create(
        Tokens(ACCESS, REFRESH, 300), user_id="u-1", tenant="t1", roles=["compliance_officer"], username=USERNAME
    )


def test_tokens_and_username_are_encrypted_at_rest(store, database_url):
    """The tokens (credentials) and the username (personal data, R16) are Vault ciphertexts."""
    sessions, runtime, _ = store
    sid = open_session(sessions)
    user, expired = sessions.load(sid)
    assert not expired and (user.access_token, user.refresh_token, user.username) == (ACCESS, REFRESH, USERNAME)
    assert user.roles == {"compliance_officer"} and user.tenant == "t1"
    runtime.db.dispose()  # flush SQLite's WAL so the dump sees every byte
    assert_no_plaintext(raw_dump(database_url), [ACCESS, REFRESH, USERNAME, sid])


def test_idle_session_expires_and_its_keys_are_shredded(store):
    sessions, runtime, clock = store
    sid = open_session(sessions)
    clock.advance(minutes=29)
    assert sessions.load(sid)[0] is not None
    clock.advance(minutes=29)  # activity moved the idle deadline
    assert sessions.load(sid)[0] is not None
    clock.advance(minutes=31)
    assert sessions.load(sid) == (None, True)
    assert sessions.load(sid) == (None, False)  # gone, not expired twice
    with runtime.db.transaction() as s:
        keys = s.execute(select(runtime.tables.data_keys.c.wrapped)).all()
    assert keys and all(k.wrapped is None for k in keys)


def test_session_ends_at_its_absolute_lifetime_whatever_the_activity(store):
    sessions, _, clock = store
    sid = open_session(sessions)
    for _ in range(24):
        clock.advance(minutes=29)
        assert sessions.load(sid)[0] is not None
    clock.advance(minutes=29)
    assert sessions.load(sid) == (None, True)


def test_refreshed_tokens_replace_the_old_pair(store):
    sessions, _, clock = store
    sid = open_session(sessions)
    sessions.replace_tokens(sid, Tokens("new-access", "new-refresh", 600), roles=["auditor"])
    user, _ = sessions.load(sid)
    assert (user.access_token, user.refresh_token, user.roles) == ("new-access", "new-refresh", {"auditor"})
    assert user.access_expires_at == clock.now + timedelta(seconds=600)


def test_ending_a_session_forgets_it(store):
    sessions, _, _ = store
    sid = open_session(sessions)
    assert sessions.end(sid) is True
    assert sessions.end(sid) is False
    assert sessions.load(sid) == (None, False)


def test_purge_drops_only_expired_sessions(store):
    sessions, _, clock = store
    old = open_session(sessions)
    clock.advance(minutes=20)
    fresh = open_session(sessions)
    clock.advance(minutes=15)
    assert sessions.purge() == 1
    assert sessions.load(old)[0] is None and sessions.load(fresh)[0] is not None


def test_unknown_or_malformed_session_ids_find_nothing(store):
    sessions, _, _ = store
    open_session(sessions)
    assert sessions.load(None) == (None, False)
    assert sessions.load("forged") == (None, False)
