"""Directory logins (R10): find a user in LDAP / Active Directory, verify the password by binding as
that user, read the groups, and map them to roles.

The password check is always a bind on the directory as the user's DN: directory passwords are
never stored or compared here.  Every failure to reach the directory (refused, timed out, TLS
broken, the service account refused) is ``DirectoryUnavailable`` (the api answers 503), never
a wrong-password answer.  Connections are closed explicitly, also after a failed open, because
ldap3 2.9 keeps a refused socket open otherwise.
"""

from __future__ import annotations

import logging
import math
import ssl
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():
    # ldap3 2.9 imports pyasn1 names deprecated in pyasn1 0.6.1 (harmless, at import only).
    warnings.filterwarnings("ignore", message=r"(tagMap|typeMap) is deprecated", category=DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPStartTLSError
    from ldap3.operation.search import parse_filter
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

log = logging.getLogger(__name__)

TLS_MODES = ("ldaps", "starttls", "none")


def ldap_filter_ok(template: str) -> bool:
    """Whether a configured filter (with ``{username}`` / ``{user_dn}`` placeholders) is one
    RFC 4515 filter: balanced parentheses, one outer filter, no trailing text.  Checked when the
    directory is configured, so a typo is a 422 then, not a failed login for everyone later."""
    text = template.replace("{username}", "x").replace("{user_dn}", "x")
    try:
        parse_filter(text, None, True, None, None, False)
    except Exception:  # noqa: BLE001 - ldap3 raises its own error, or an IndexError on some garbage
        return False
    return True


class DirectoryUnavailable(Exception):
    """The directory cannot be used right now (down, unreachable, TLS or service-account failure)."""


class DirectoryRejected(Exception):
    """The directory does not know an enabled user by that name, or the password is wrong."""


@dataclass(frozen=True)
class DirectoryConfig:
    """One tenant's directory, as its administrator configured it (docs/ldap.md)."""

    urls: tuple[str, ...]
    tls: str
    bind_dn: str
    bind_password: str
    user_search_base: str
    user_filter: str  # with {username}
    username_attribute: str = "uid"
    group_search_base: str | None = None
    group_filter: str | None = None  # with {user_dn}; None: read member_of_attribute on the user
    group_name_attribute: str = "cn"
    member_of_attribute: str | None = "memberOf"
    display_name_attribute: str = "displayName"
    mail_attribute: str = "mail"
    group_roles: dict[str, list[str]] = field(default_factory=dict)
    timeout: float = 5.0
    ca_certificates: str | None = None

    def __repr__(self) -> str:  # never show the bind secret
        return f"<DirectoryConfig urls={list(self.urls)!r} tls={self.tls!r}>"


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    username: str
    display_name: str | None
    email: str | None
    groups: tuple[str, ...]

    def __repr__(self) -> str:  # personal data stays out of reprs (they end up in tracebacks)
        return "<DirectoryUser>"


def map_roles(
    groups: tuple[str, ...] | list[str], group_roles: dict[str, list[str]], group_dns: tuple[str, ...] = ()
) -> list[str]:
    """Roles for the user's groups; a mapping key is a group name or a group DN, case-insensitive."""
    wanted = {g.lower() for g in groups} | {d.lower() for d in group_dns}
    roles: set[str] = set()
    for key, mapped in group_roles.items():
        if key.lower() in wanted:
            roles.update(mapped)
    return sorted(roles)


def _first(entry: dict[str, Any], attribute: str | None) -> str | None:
    if not attribute:
        return None
    value = entry.get(attribute)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value not in (None, "") else None


def _all(entry: dict[str, Any], attribute: str | None) -> list[str]:
    if not attribute:
        return []
    value = entry.get(attribute)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _rdn_value(dn: str) -> str:
    try:
        return parse_dn(dn)[0][1]
    except (LDAPException, IndexError, ValueError):
        return dn


def close(conn) -> None:
    """Close an ldap3 connection for good, including the socket of a failed open."""
    try:
        if not conn.closed:
            conn.unbind()
    except LDAPException:
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
        conn.socket = None


class DirectoryClient:
    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config

    def _tls(self) -> ldap3.Tls:
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_data=self.config.ca_certificates or None,
        )

    def _server(self, url: str) -> ldap3.Server:
        tls = self._tls() if self.config.tls in ("ldaps", "starttls") else None
        return ldap3.Server(
            url, use_ssl=self.config.tls == "ldaps", tls=tls, get_info=ldap3.NONE, connect_timeout=self.config.timeout
        )

    def _connect(self, server: ldap3.Server, user: str, password: str) -> tuple[Any, bool]:
        """An opened connection and whether the bind succeeded; communication failures raise."""
        # ldap3 packs receive_timeout into a socket option as whole seconds.
        conn = ldap3.Connection(
            server,
            user=user,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=max(1, math.ceil(self.config.timeout)),
            read_only=True,
            raise_exceptions=False,
        )
        try:
            conn.open()
            if self.config.tls == "starttls" and not conn.start_tls():
                raise DirectoryUnavailable("StartTLS failed")
            return conn, bool(conn.bind())
        except BaseException:
            close(conn)
            raise

    @contextmanager
    def _service(self) -> Iterator[tuple[Any, ldap3.Server]]:
        """A connection bound as the service account, on the first directory server that answers."""
        reasons = []
        for url in self.config.urls:
            try:
                server = self._server(url)
                conn, bound = self._connect(server, self.config.bind_dn, self.config.bind_password)
            except (LDAPException, DirectoryUnavailable, OSError) as exc:
                reasons.append(type(exc).__name__)  # the next server, if there is one
                continue
            if not bound:
                close(conn)
                # A wrong service secret is the operator's problem, not the user's: not a failed login.
                log.warning("directory: the service account bind was refused")
                raise DirectoryUnavailable("the directory refused the service account")
            try:
                yield conn, server
            finally:
                close(conn)
            return
        log.warning("directory: no server answered (%s)", ", ".join(reasons) or "no servers configured")
        raise DirectoryUnavailable("no directory server answered")

    def _find(self, conn, username: str) -> tuple[str, dict[str, Any]] | None:
        cfg = self.config
        query = cfg.user_filter.replace("{username}", escape_filter_chars(username))
        attributes = [
            a
            for a in (cfg.username_attribute, cfg.display_name_attribute, cfg.mail_attribute, cfg.member_of_attribute)
            if a
        ]
        try:
            ok = conn.search(cfg.user_search_base, query, ldap3.SUBTREE, attributes=attributes, size_limit=2)
        except LDAPCommunicationError:
            raise DirectoryUnavailable("the directory stopped answering") from None
        except LDAPException:
            raise DirectoryUnavailable("the user search failed") from None
        result = conn.result.get("result") if conn.result else None
        if not ok and result not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise DirectoryUnavailable("the user search failed")
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return None  # nobody, or ambiguous: never guess which person it is
        return entries[0]["dn"], dict(entries[0].get("attributes") or {})

    def _groups(self, conn, dn: str, attributes: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(group names, group DNs) of the user."""
        cfg = self.config
        if cfg.group_filter and cfg.group_search_base:
            query = cfg.group_filter.replace("{user_dn}", escape_filter_chars(dn))
            try:
                conn.search(cfg.group_search_base, query, ldap3.SUBTREE, attributes=[cfg.group_name_attribute])
            except LDAPCommunicationError:
                raise DirectoryUnavailable("the directory stopped answering") from None
            except LDAPException:
                raise DirectoryUnavailable("the group search failed") from None
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
            dns = tuple(e["dn"] for e in entries)
            names = tuple(
                _first(dict(e.get("attributes") or {}), cfg.group_name_attribute) or _rdn_value(e["dn"])
                for e in entries
            )
        else:
            dns = tuple(_all(attributes, cfg.member_of_attribute))
            names = tuple(_rdn_value(d) for d in dns)
        return tuple(sorted(set(names))), dns

    def _user(self, conn, username: str) -> tuple[DirectoryUser, tuple[str, ...]] | None:
        found = self._find(conn, username)
        if found is None:
            return None
        dn, attributes = found
        names, dns = self._groups(conn, dn, attributes)
        cfg = self.config
        user = DirectoryUser(
            dn=dn,
            username=_first(attributes, cfg.username_attribute) or username,
            display_name=_first(attributes, cfg.display_name_attribute),
            email=_first(attributes, cfg.mail_attribute),
            groups=names,
        )
        return user, dns

    def lookup(self, username: str) -> tuple[DirectoryUser, list[str]] | None:
        """The enabled user and their mapped roles, without a password (used on refresh)."""
        with self._service() as (conn, _server):
            found = self._user(conn, username)
        if found is None:
            return None
        user, dns = found
        return user, map_roles(user.groups, self.config.group_roles, dns)

    def authenticate(self, username: str, password: str) -> tuple[DirectoryUser, list[str]]:
        """Verify the password by binding as the user; returns the user and their mapped roles."""
        if not password:
            # An empty password makes a simple bind "unauthenticated", which AD answers with success.
            raise DirectoryRejected()
        with self._service() as (conn, server):
            found = self._user(conn, username)
            if found is None:
                raise DirectoryRejected()
            user, dns = found
            try:
                user_conn, bound = self._connect(server, user.dn, password)
            except (LDAPCommunicationError, LDAPStartTLSError, DirectoryUnavailable, OSError):
                raise DirectoryUnavailable("the directory stopped answering") from None
            except LDAPException:
                raise DirectoryRejected() from None
            close(user_conn)
            if not bound:
                raise DirectoryRejected()
        return user, map_roles(user.groups, self.config.group_roles, dns)

    def check(self) -> None:
        """Raise DirectoryUnavailable unless the service account can bind (an admin's connection test)."""
        with self._service():
            pass
