"""The real OpenLDAP test directory (tests/ldap_server.py) works the way docs/ldap.md says."""

from __future__ import annotations

import shutil
import subprocess

import pytest

# ldap3 comes from tests.ldap_server, which imports it with pyasn1's DeprecationWarning silenced.
from tests.ldap_server import (  # noqa: F401  (slapd* are fixtures)
    AD_SETTINGS,
    AD_UPN_USER_FILTER,
    BASE_DN,
    DEMO_GROUPS,
    DEMO_LDIF,
    DEMO_USERS,
    OPENLDAP_SETTINGS,
    OPENLDAP_USER_FILTER_ANYWHERE,
    SlapdServer,
    close_connection,
    group_dn,
    ldap3,
    require_slapd,
    slapd,
    slapd_ad,
    slapd_ad_fresh,
    slapd_fresh,
)

if ldap3 is not None:
    from ldap3.core.exceptions import (
        LDAPInsufficientAccessRightsResult,
        LDAPInvalidCredentialsResult,
        LDAPNoSuchObjectResult,
        LDAPPasswordIsMandatoryError,
        LDAPSocketOpenError,
    )
    from ldap3.utils.conv import escape_filter_chars

ENABLED = [u for u in DEMO_USERS.values() if not u.disabled]
DISABLED = [u for u in DEMO_USERS.values() if u.disabled]


def can_bind(server: SlapdServer, dn: str, password: str) -> bool:
    """Verify a password the way an auth service does: a simple bind as the user's DN."""
    conn = ldap3.Connection(server.server(), dn, password, receive_timeout=5)
    try:
        return bool(conn.bind())
    finally:
        close_connection(conn)


def find_users(server: SlapdServer, user_filter: str, username: str, base: str | None = None) -> list:
    with server.connect() as conn:
        conn.search(
            base or server.settings.user_search_base,
            user_filter.format(username=escape_filter_chars(username)),
            attributes=["uid", "cn", "sn", "givenName", "displayName", "mail", "memberOf"],
        )
        return list(conn.entries)


def groups_of(server: SlapdServer, user_dn: str) -> set[str]:
    with server.connect() as conn:
        conn.search(
            server.settings.group_search_base,
            server.settings.group_filter.format(user_dn=escape_filter_chars(user_dn)),
            attributes=["cn"],
        )
        return {e.cn.value for e in conn.entries}


# --- the "openldap" flavour (deploy/ldap/demo.ldif) ----------------------------------------------


def test_service_account_binds_and_finds_a_user_by_uid(slapd):
    assert slapd.url.startswith("ldap://127.0.0.1:")
    with slapd.connect(slapd.bind_dn, slapd.bind_password) as conn:
        assert conn.bound
        conn.search(
            slapd.base_dn, "(&(objectClass=inetOrgPerson)(uid=alice))", attributes=["cn", "sn", "mail", "displayName"]
        )
        [entry] = conn.entries
    assert entry.entry_dn == "uid=alice,ou=people,dc=recept,dc=test"
    assert entry.cn.value == "Alice Andersson"
    assert entry.sn.value == "Andersson"
    assert entry.mail.value == "alice@recept.test"
    assert entry.displayName.value == "Alice Andersson"


@pytest.mark.parametrize("user", ENABLED, ids=lambda u: u.uid)
def test_every_demo_user_is_as_documented_and_its_password_verifies(slapd, user):
    [entry] = find_users(slapd, OPENLDAP_SETTINGS.user_filter, user.uid)
    assert entry.entry_dn == user.dn
    assert (entry.cn.value, entry.sn.value, entry.givenName.value) == (user.cn, user.sn, user.given_name)
    assert (entry.displayName.value, entry.mail.value) == (user.display_name, user.mail)
    assert can_bind(slapd, entry.entry_dn, user.password)
    assert groups_of(slapd, entry.entry_dn) == set(user.groups)


def test_wrong_password_fails(slapd):
    alice = DEMO_USERS["alice"]
    assert not can_bind(slapd, alice.dn, "alice-password-2")
    assert not can_bind(slapd, alice.dn, DEMO_USERS["bob"].password)
    assert not can_bind(slapd, "uid=nobody,ou=people,dc=recept,dc=test", "whatever")
    with pytest.raises(LDAPInvalidCredentialsResult):
        with slapd.connect(alice.dn, "wrong"):
            pass
    # An empty password would be an unauthenticated ("anonymous") bind; ldap3 refuses to send it.
    with pytest.raises(LDAPPasswordIsMandatoryError):
        can_bind(slapd, alice.dn, "")


def test_passwords_are_not_readable_and_anonymous_sees_nothing(slapd):
    with slapd.connect() as conn:
        conn.search(slapd.people_dn, "(uid=alice)", attributes=["userPassword", "cn"])
        [entry] = conn.entries
        assert entry.cn.value == "Alice Andersson"
        assert not entry["userPassword"].values
    anonymous = ldap3.Connection(slapd.server(), raise_exceptions=True)
    try:
        anonymous.open()
        with pytest.raises(LDAPNoSuchObjectResult):
            anonymous.search(slapd.base_dn, "(uid=*)")
    finally:
        close_connection(anonymous)
    with slapd.connect() as conn, pytest.raises(LDAPInsufficientAccessRightsResult):
        conn.modify(DEMO_USERS["alice"].dn, {"mail": [(ldap3.MODIFY_REPLACE, ["x@recept.test"])]})


def test_group_membership_is_readable_both_ways(slapd):
    with slapd.connect() as conn:
        conn.search(slapd.groups_dn, "(objectClass=groupOfNames)", attributes=["cn", "member"])
        groups = {e.cn.value: set(e.member.values) for e in conn.entries}
        assert groups == {g: {DEMO_USERS[uid].dn for uid in members} for g, members in DEMO_GROUPS.items()}
        # Users carry memberOf (computed by the dynlist overlay), usable in filters too.
        conn.search(slapd.people_dn, "(uid=bob)", attributes=["memberOf"])
        assert set(conn.entries[0].memberOf.values) == {group_dn("kitchen-staff"), group_dn("care-admins")}
        conn.search(slapd.base_dn, f"(memberOf={group_dn('care-admins')})", attributes=["uid"])
        assert {e.uid.value for e in conn.entries} == {"bob", "carol"}
    assert groups_of(slapd, DEMO_USERS["erin"].dn) == set()


def test_the_disabled_user_is_excluded_by_the_documented_search(slapd):
    dave = DEMO_USERS["dave"]
    assert dave.disabled and dave.dn == "uid=dave,ou=disabled,dc=recept,dc=test"
    # The login search (base ou=people) does not find it ...
    assert find_users(slapd, OPENLDAP_SETTINGS.user_filter, "dave") == []
    # ... nor does the whole-tree filter, which still finds everyone else.
    assert find_users(slapd, OPENLDAP_USER_FILTER_ANYWHERE, "dave", base=BASE_DN) == []
    assert [e.entry_dn for e in find_users(slapd, OPENLDAP_USER_FILTER_ANYWHERE, "alice", base=BASE_DN)] == [
        DEMO_USERS["alice"].dn
    ]
    # The account exists (it is the search that excludes it) and is still in kitchen-staff ...
    [entry] = find_users(slapd, "(uid={username})", "dave", base=BASE_DN)
    assert entry.entry_dn == dave.dn
    assert groups_of(slapd, dave.dn) == {"kitchen-staff"}
    # ... but the directory refuses its bind even with the right password.
    assert not can_bind(slapd, dave.dn, dave.password)


def test_filter_values_are_escaped(slapd):
    assert find_users(slapd, OPENLDAP_SETTINGS.user_filter, "*") == []
    assert find_users(slapd, OPENLDAP_SETTINGS.user_filter, "alice)(uid=*") == []


def test_stop_makes_connections_fail_and_start_brings_it_back(slapd_fresh):
    server = slapd_fresh
    url, alice = server.url, DEMO_USERS["alice"]
    server.add_user("frank", "frank-password-1")
    server.stop()
    assert not server.running
    with pytest.raises(LDAPSocketOpenError):
        can_bind(server, alice.dn, alice.password)
    with pytest.raises(LDAPSocketOpenError):
        with server.connect():
            pass
    server.stop()  # idempotent
    server.start()
    assert server.running and server.url == url
    assert can_bind(server, alice.dn, alice.password)
    assert can_bind(server, server.user_dn("frank"), "frank-password-1")  # the data survived


def test_helpers_add_disable_enable_and_delete_users(slapd_fresh):
    server = slapd_fresh
    dn = server.add_user("frank", "frank-password-1", cn="Frank Falk", sn="Falk", groups=["dpo"])
    assert dn == "uid=frank,ou=people,dc=recept,dc=test"
    [entry] = find_users(server, server.settings.user_filter, "frank")
    assert (entry.cn.value, entry.mail.value, entry.displayName.value) == (
        "Frank Falk",
        "frank@recept.test",
        "Frank Falk",
    )
    assert can_bind(server, dn, "frank-password-1")
    assert groups_of(server, dn) == {"dpo"}

    new_dn = server.disable_user("frank")
    assert new_dn == "uid=frank,ou=disabled,dc=recept,dc=test"
    assert find_users(server, server.settings.user_filter, "frank") == []
    assert not can_bind(server, new_dn, "frank-password-1")
    assert groups_of(server, new_dn) == {"dpo"}  # refint moved the membership along

    assert server.enable_user("frank") == dn
    assert can_bind(server, dn, "frank-password-1")
    server.set_password("frank", "frank-password-2")
    assert not can_bind(server, dn, "frank-password-1")
    assert can_bind(server, dn, "frank-password-2")

    server.delete_user("frank")
    with pytest.raises(KeyError):
        server.user_dn("frank")
    assert not can_bind(server, dn, "frank-password-2")
    with server.connect() as conn:
        conn.search(server.groups_dn, "(cn=dpo)", attributes=["member"])
        assert conn.entries[0].member.values == [DEMO_USERS["carol"].dn]

    server.add_user("gina", "gina-password-1", disabled=True)
    assert find_users(server, server.settings.user_filter, "gina") == []
    server.add_group("auditors", ["alice"])
    server.remove_from_group("alice", "kitchen-staff")
    assert groups_of(server, DEMO_USERS["alice"].dn) == {"auditors"}
    server.add_to_group("alice", "dpo")
    assert groups_of(server, DEMO_USERS["alice"].dn) == {"auditors", "dpo"}


def test_fresh_servers_are_isolated_and_reset_restores_the_demo(slapd, slapd_fresh):
    assert slapd_fresh.url != slapd.url
    slapd_fresh.delete_user("alice")
    slapd_fresh.disable_user("bob")
    assert find_users(slapd_fresh, OPENLDAP_SETTINGS.user_filter, "alice") == []
    assert len(find_users(slapd, OPENLDAP_SETTINGS.user_filter, "alice")) == 1
    slapd_fresh.reset()
    assert slapd_fresh.running
    assert slapd_fresh.user_dn("alice") == DEMO_USERS["alice"].dn
    assert slapd_fresh.user_dn("bob") == DEMO_USERS["bob"].dn


def test_demo_ldif_is_plain_ldif_that_loads_into_a_running_server(tmp_path):
    """The way a container seeds it: ldapadd into an empty, running directory."""
    require_slapd()
    ldapadd = shutil.which("ldapadd")
    if ldapadd is None:
        pytest.skip("ldapadd (ldap-utils) is not installed")
    empty = tmp_path / "empty.ldif"
    empty.write_text("")
    with SlapdServer(tmp_path / "slapd", ldif=empty) as server:
        result = subprocess.run(
            [ldapadd, "-x", "-H", server.url, "-D", server.root_dn, "-w", server.root_password, "-f", str(DEMO_LDIF)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        for user in ENABLED:
            assert can_bind(server, user.dn, user.password)
        assert groups_of(server, DEMO_USERS["carol"].dn) == {"care-admins", "dpo"}


# --- the "ad" flavour ---------------------------------------------------------------------------


@pytest.mark.parametrize("user", ENABLED, ids=lambda u: u.uid)
def test_ad_flavour_finds_users_by_sam_account_name_and_upn(slapd_ad, user):
    assert slapd_ad.settings is AD_SETTINGS
    [by_sam] = find_users(slapd_ad, AD_SETTINGS.user_filter, user.uid.upper())  # case-insensitive, as in AD
    [by_upn] = find_users(slapd_ad, AD_UPN_USER_FILTER, user.user_principal_name)
    assert by_sam.entry_dn == by_upn.entry_dn == user.ad_dn
    assert by_sam.displayName.value == user.display_name
    assert can_bind(slapd_ad, by_sam.entry_dn, user.password)
    assert not can_bind(slapd_ad, by_sam.entry_dn, user.password + "x")
    assert set(by_sam.memberOf.values) == {group_dn(g) for g in user.groups}
    assert groups_of(slapd_ad, by_sam.entry_dn) == set(user.groups)


def test_ad_flavour_excludes_the_disabled_user_by_user_account_control(slapd_ad):
    dave = DEMO_USERS["dave"]
    assert find_users(slapd_ad, AD_SETTINGS.user_filter, "dave") == []
    assert find_users(slapd_ad, AD_UPN_USER_FILTER, dave.user_principal_name) == []
    [entry] = find_users(slapd_ad, "(&(objectClass=user)(sAMAccountName={username}))", "dave")
    assert entry.entry_dn == dave.ad_dn == "cn=Dave Dahl,ou=people,dc=recept,dc=test"
    with slapd_ad.connect() as conn:
        conn.search(dave.ad_dn, "(objectClass=*)", ldap3.BASE, attributes=["userAccountControl"])
        assert int(conn.entries[0].userAccountControl.value) == 514
    assert not can_bind(slapd_ad, dave.ad_dn, dave.password)


def test_ad_flavour_helpers_toggle_user_account_control(slapd_ad_fresh):
    server = slapd_ad_fresh
    dn = server.add_user("frank", "frank-password-1", cn="Frank Falk", sn="Falk", groups=["kitchen-staff"])
    assert dn == "cn=Frank Falk,ou=people,dc=recept,dc=test"
    assert [e.entry_dn for e in find_users(server, AD_SETTINGS.user_filter, "frank")] == [dn]
    assert server.disable_user("frank") == dn
    assert find_users(server, AD_SETTINGS.user_filter, "frank") == []
    assert not can_bind(server, dn, "frank-password-1")
    server.enable_user("frank")
    assert can_bind(server, dn, "frank-password-1")
    server.delete_user("frank")
    assert groups_of(server, dn) == set()
