"""A real OpenLDAP directory (Debian's ``slapd``) that tests start and stop themselves.

``SlapdServer`` writes a small ``slapd.conf`` into a temporary directory (its mdb database goes
there too), loads the demo content offline with ``slapadd``, and runs ``slapd -d none`` in the
foreground as a child process on ``ldap://127.0.0.1:<free port>``. Start-up takes about 0.1 s.
``stop()`` and ``start()`` again keep the port and the data, so a test can take the directory
DOWN and bring it back.

Two flavours of the same demo people and groups (docs/ldap.md):

* ``"openldap"`` (default): exactly ``deploy/ldap/demo.ldif``; login name ``uid``; a disabled
  account is moved to ``ou=disabled``.
* ``"ad"``: Active Directory look-alike built from the same data: entries also carry
  ``sAMAccountName``, ``userPrincipalName``, ``userAccountControl`` (bit 2 = disabled, evaluated
  with the AD matching rule 1.2.840.113556.1.4.803, which OpenLDAP implements), objectClass
  ``user`` / ``group``, and CN-named DNs (``cn=Alice Andersson,ou=people,...``).

In both, users carry a computed ``memberOf`` (dynlist overlay), the directory itself refuses a
disabled account's bind, and group ``member`` values follow renames and deletions (refint).

Fixtures (import them into a test module, or list this module in ``pytest_plugins``)::

    slapd           session-scoped "openldap" server; read it, do not stop or change it
    slapd_fresh     a new "openldap" server for one test: change it, stop it, anything goes
    slapd_ad        session-scoped "ad" server
    slapd_ad_fresh  a new "ad" server for one test

Without ``slapd`` installed (``scripts/install-slapd.sh``) they skip, or fail when ``CI`` is set.

ldap3 2.9.1 imports names that pyasn1 >= 0.6.1 deprecates, which warns (DeprecationWarning) at
import; the suite turns warnings into errors, so this module imports ldap3 with exactly that
warning silenced. Import ldap3 from here (``from tests.ldap_server import ldap3``) or after it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import missing

with warnings.catch_warnings():
    # ldap3/utils/asn1.py: `from pyasn1.codec.ber.encoder import tagMap, typeMap`, deprecated in
    # pyasn1 0.6.1. It fires once, at import; nothing is wrong at run time.
    warnings.filterwarnings("ignore", message=r"(tagMap|typeMap) is deprecated", category=DeprecationWarning)
    try:
        import ldap3
        from ldap3.core.exceptions import LDAPException
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn
    except ImportError:  # pragma: no cover - ldap3 is a project dependency
        ldap3 = None  # type: ignore[assignment]
        LDAPException = Exception  # type: ignore[assignment,misc]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_LDIF = REPO_ROOT / "deploy" / "ldap" / "demo.ldif"

# --- layout and accounts (they must match deploy/ldap/demo.ldif; a test checks) -----------------

BASE_DN = "dc=recept,dc=test"
PEOPLE_DN = f"ou=people,{BASE_DN}"
DISABLED_DN = f"ou=disabled,{BASE_DN}"
GROUPS_DN = f"ou=groups,{BASE_DN}"
SERVICES_DN = f"ou=services,{BASE_DN}"
MAIL_DOMAIN = "recept.test"

ROOT_DN = f"cn=admin,{BASE_DN}"  # exists only in the test server's configuration
# The rootDN's password is random per server (``server.root_password``): a bind with it proves
# that the server answering on the port is this one.
SERVICE_DN = f"cn=recept-service,{SERVICES_DN}"
SERVICE_PASSWORD = "recept-service-password-1"

UAC_NORMAL_ACCOUNT = 512  # userAccountControl flags, as in Active Directory
UAC_ACCOUNTDISABLE = 2
AD_DISABLED_FILTER = "(userAccountControl:1.2.840.113556.1.4.803:=2)"


@dataclass(frozen=True)
class LoginSettings:
    """What an operator configures in the auth service for a directory.

    ``{username}`` and ``{user_dn}`` are placeholders: escape the value with
    ``ldap3.utils.conv.escape_filter_chars`` before putting it in.
    """

    user_search_base: str
    user_filter: str  # finds one ENABLED user by login name
    username_attribute: str
    group_search_base: str
    group_filter: str  # groups that list the user's DN as a member
    group_name_attribute: str = "cn"
    member_of_attribute: str = "memberOf"  # on the user: the DNs of its groups
    display_name_attribute: str = "displayName"
    mail_attribute: str = "mail"


OPENLDAP_SETTINGS = LoginSettings(
    user_search_base=PEOPLE_DN,  # ou=disabled is outside it
    user_filter="(&(objectClass=inetOrgPerson)(uid={username}))",
    username_attribute="uid",
    group_search_base=GROUPS_DN,
    group_filter="(&(objectClass=groupOfNames)(member={user_dn}))",
)
# The same for a search over the whole tree (base BASE_DN): exclude entries under ou=disabled.
OPENLDAP_USER_FILTER_ANYWHERE = "(&(objectClass=inetOrgPerson)(uid={username})(!(ou:dn:=disabled)))"

AD_SETTINGS = LoginSettings(
    user_search_base=BASE_DN,
    user_filter=f"(&(objectClass=user)(sAMAccountName={{username}})(!{AD_DISABLED_FILTER}))",
    username_attribute="sAMAccountName",
    group_search_base=BASE_DN,
    group_filter="(&(objectClass=group)(member={user_dn}))",
)
AD_UPN_USER_FILTER = f"(&(objectClass=user)(userPrincipalName={{username}})(!{AD_DISABLED_FILTER}))"


@dataclass(frozen=True)
class DemoUser:
    uid: str
    password: str
    cn: str
    sn: str
    given_name: str
    groups: tuple[str, ...] = ()
    disabled: bool = False

    @property
    def mail(self) -> str:
        return f"{self.uid}@{MAIL_DOMAIN}"

    @property
    def display_name(self) -> str:
        return self.cn

    @property
    def user_principal_name(self) -> str:
        return f"{self.uid}@{MAIL_DOMAIN}"

    @property
    def dn(self) -> str:
        """The DN in the "openldap" flavour (demo.ldif)."""
        return f"uid={self.uid},{DISABLED_DN if self.disabled else PEOPLE_DN}"

    @property
    def ad_dn(self) -> str:
        """The DN in the "ad" flavour."""
        return f"cn={escape_rdn(self.cn)},{PEOPLE_DN}"


DEMO_USERS: dict[str, DemoUser] = {
    u.uid: u
    for u in (
        DemoUser("alice", "alice-password-1", "Alice Andersson", "Andersson", "Alice", ("kitchen-staff",)),
        DemoUser("bob", "bob-password-1", "Bob Berg", "Berg", "Bob", ("kitchen-staff", "care-admins")),
        DemoUser("carol", "carol-password-1", "Carol Carlsson", "Carlsson", "Carol", ("care-admins", "dpo")),
        DemoUser("asa", "asa-password-1", "Åsa Öberg", "Öberg", "Åsa", ("kitchen-staff",)),
        DemoUser("erin", "erin-password-1", "Erin Ek", "Ek", "Erin", ()),
        DemoUser("dave", "dave-password-1", "Dave Dahl", "Dahl", "Dave", ("kitchen-staff",), disabled=True),
    )
}
DEMO_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(u.uid for u in DEMO_USERS.values() if group in u.groups)
    for group in ("kitchen-staff", "care-admins", "dpo")
}
DEMO_GROUP_DESCRIPTIONS = {
    "kitchen-staff": "Kitchen staff: view and place orders",
    "care-admins": "Care administrators: administer order registers",
    "dpo": "Data protection officers: GDPR requests and the data inventory",
}


def group_dn(name: str) -> str:
    return f"cn={escape_rdn(name)},{GROUPS_DN}"


def ssha(password: str, salt: bytes | None = None) -> str:
    """An RFC 2307 ``{SSHA}`` userPassword value, which slapd verifies natively."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def close_connection(conn) -> None:
    """Close an ldap3 connection for good, also one whose open failed.

    After a refused connection (directory down) ldap3 2.9.1 keeps the failed socket in
    ``conn.socket``, and ``unbind()`` does not close it: it surfaces later as an unclosed-socket
    ResourceWarning, which this suite turns into an error.
    """
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


# --- the "ad" flavour -------------------------------------------------------------------------

# A few Active Directory attributes and classes, with AD's OIDs, made usable in filters
# (OpenLDAP's msuser.schema has them without matching rules). Classes are AUXILIARY here.
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName $ userAccountControl ) )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group' AUXILIARY
  MAY ( sAMAccountName ) )
"""


def _ldif_value(name: str, value: str) -> str:
    if value.isascii() and not value.startswith((" ", ":", "<")):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def _ldif_entry(dn: str, attributes: list[tuple[str, str]]) -> str:
    return "\n".join([_ldif_value("dn", dn)] + [_ldif_value(n, v) for n, v in attributes]) + "\n"


def ad_demo_ldif() -> str:
    """The demo people and groups as an Active Directory look-alike (for the "ad" flavour)."""
    entries = [
        _ldif_entry(
            BASE_DN,
            [
                ("objectClass", "top"),
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", "recept"),
                ("o", "Recept Demo"),
            ],
        ),
    ]
    for ou in ("people", "groups", "services"):
        entries.append(
            _ldif_entry(
                f"ou={ou},{BASE_DN}", [("objectClass", "top"), ("objectClass", "organizationalUnit"), ("ou", ou)]
            )
        )
    entries.append(
        _ldif_entry(
            SERVICE_DN,
            [
                ("objectClass", "top"),
                ("objectClass", "applicationProcess"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "recept-service"),
                ("userPassword", ssha(SERVICE_PASSWORD)),
            ],
        )
    )
    for u in DEMO_USERS.values():
        entries.append(
            _ldif_entry(
                u.ad_dn,
                [
                    ("objectClass", "top"),
                    ("objectClass", "person"),
                    ("objectClass", "organizationalPerson"),
                    ("objectClass", "inetOrgPerson"),
                    ("objectClass", "user"),
                    ("cn", u.cn),
                    ("sn", u.sn),
                    ("givenName", u.given_name),
                    ("displayName", u.display_name),
                    ("uid", u.uid),
                    ("sAMAccountName", u.uid),
                    ("userPrincipalName", u.user_principal_name),
                    ("mail", u.mail),
                    ("userAccountControl", str(UAC_NORMAL_ACCOUNT | (UAC_ACCOUNTDISABLE if u.disabled else 0))),
                    ("userPassword", ssha(u.password)),
                ],
            )
        )
    for group, members in DEMO_GROUPS.items():
        entries.append(
            _ldif_entry(
                group_dn(group),
                [
                    ("objectClass", "top"),
                    ("objectClass", "groupOfNames"),
                    ("objectClass", "group"),
                    ("cn", group),
                    ("sAMAccountName", group),
                    ("description", DEMO_GROUP_DESCRIPTIONS[group]),
                ]
                + [("member", DEMO_USERS[uid].ad_dn) for uid in members],
            )
        )
    return "\n".join(entries)


# --- locating OpenLDAP --------------------------------------------------------------------------


def _find_program(name: str) -> str | None:
    return shutil.which(
        name,
        path=os.pathsep.join(
            ["/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/lib/openldap", os.environ.get("PATH", "")]
        ),
    )


def _find_dir(candidates: tuple[str, ...], marker: str) -> str | None:
    for directory in candidates:
        if os.path.exists(os.path.join(directory, marker)):
            return directory
    return None


SLAPD = os.environ.get("RECEPT_SLAPD") or _find_program("slapd")
SLAPADD = os.environ.get("RECEPT_SLAPADD") or _find_program("slapadd")
SCHEMA_DIR = _find_dir(
    ("/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema"), "inetorgperson.schema"
)
MODULE_DIR = _find_dir(
    ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap", "/usr/local/libexec/openldap"), "back_mdb.la"
)


def slapd_problem() -> str | None:
    """What is missing to run a test directory here, or None."""
    if ldap3 is None:
        return "the ldap3 package"
    if not all(p and os.access(p, os.X_OK) for p in (SLAPD, SLAPADD)):
        return "OpenLDAP slapd/slapadd (run scripts/install-slapd.sh)"
    if not SCHEMA_DIR:
        return "the OpenLDAP schema files (run scripts/install-slapd.sh)"
    return None


SLAPD_CONF = """\
# Generated by tests/ldap_server.py for a throw-away test directory.
include "{schema}/core.schema"
include "{schema}/cosine.schema"
include "{schema}/nis.schema"
include "{schema}/inetorgperson.schema"
include "{schema}/dyngroup.schema"
{extra_schema}
{modules}
pidfile "{workdir}/slapd.pid"
argsfile "{workdir}/slapd.args"
loglevel none

database mdb
maxsize 33554432
suffix "{base_dn}"
rootdn "{root_dn}"
rootpw {root_pw}
directory "{workdir}/db"
dbnosync
index objectClass eq
index uid,cn,mail eq
index member eq

# memberOf on users, computed from the groups' member values (as Active Directory shows it).
overlay dynlist
dynlist-attrset groupOfURLs memberURL member+memberOf@groupOfNames
# Renaming, moving or deleting a user updates or removes its DN in the groups.
overlay refint
refint_attributes member
refint_nothing "{root_dn}"

# A disabled account cannot bind, whatever its password.
access to {disabled_target} attrs=userPassword
  by * none
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
# The service account reads everything except passwords; users read their own entry.
access to *
  by dn.exact="{service_dn}" read
  by self read
  by * none
"""

FLAVOURS = ("openldap", "ad")

_running: set[SlapdServer] = set()  # strong references: a running server is never collected


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


try:
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (ImportError, OSError, AttributeError):  # pragma: no cover
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child slapd gets SIGTERM if the test process dies, even by SIGKILL."""
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _PortTaken(Exception):
    pass


class SlapdServer:
    """A throw-away slapd with the demo directory, in ``workdir``, on ``127.0.0.1:port``.

    Attributes: ``url``, ``host``, ``port``, ``flavour``, ``base_dn``, ``people_dn``,
    ``disabled_dn``, ``groups_dn``, ``bind_dn``/``bind_password`` (the service account),
    ``root_dn``/``root_password``, ``settings`` (LoginSettings), ``workdir``, ``running``.
    """

    def __init__(
        self, workdir: Path | str, *, flavour: str = "openldap", port: int | None = None, ldif: Path | str | None = None
    ) -> None:
        problem = slapd_problem()
        if problem:
            raise RuntimeError(f"cannot run a test directory: missing {problem}")
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        self.workdir = Path(workdir).resolve()
        self.flavour = flavour
        self.host = "127.0.0.1"
        self._fixed_port = bool(port)
        self.port = port or free_port(self.host)
        self.ldif = Path(ldif) if ldif else (DEMO_LDIF if flavour == "openldap" else None)
        self.base_dn = BASE_DN
        self.people_dn = PEOPLE_DN
        self.disabled_dn = DISABLED_DN  # "openldap" flavour only
        self.groups_dn = GROUPS_DN
        self.bind_dn = SERVICE_DN
        self.bind_password = SERVICE_PASSWORD
        self.root_dn = ROOT_DN
        self.root_password = f"admin-{secrets.token_hex(8)}"
        self.settings = OPENLDAP_SETTINGS if flavour == "openldap" else AD_SETTINGS
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._loaded = False
        self._started_once = False

    def __repr__(self) -> str:
        return f"<SlapdServer {self.flavour} {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "slapd.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "slapd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- life cycle -----------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        modules = ""
        if MODULE_DIR:
            modules = f'modulepath "{MODULE_DIR}"\nmoduleload back_mdb\nmoduleload dynlist\nmoduleload refint'
        extra_schema = ""
        disabled_target = f'dn.subtree="{DISABLED_DN}"'
        if self.flavour == "ad":
            (self.workdir / "ad.schema").write_text(AD_SCHEMA)
            extra_schema = f'include "{self.workdir}/ad.schema"'
            disabled_target = f'filter="{AD_DISABLED_FILTER}"'
        self.conf_path.write_text(
            SLAPD_CONF.format(
                schema=SCHEMA_DIR,
                extra_schema=extra_schema,
                modules=modules,
                workdir=self.workdir,
                base_dn=BASE_DN,
                root_dn=ROOT_DN,
                root_pw=ssha(self.root_password),
                disabled_target=disabled_target,
                service_dn=SERVICE_DN,
            )
        )

    def load(self) -> None:
        """(Re)create the database from the demo content, offline. The server must be stopped."""
        if self.running:
            raise RuntimeError("stop the server before reloading its database")
        self._write_config()
        ldif = self.ldif
        if ldif is None:
            ldif = self.workdir / "demo-ad.ldif"
            ldif.write_text(ad_demo_ldif(), encoding="utf-8")
        db = self.workdir / "db"
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir(parents=True)
        result = subprocess.run(
            [SLAPADD, "-q", "-f", str(self.conf_path), "-l", str(ldif)], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed ({result.returncode}): {result.stderr.strip()}")
        self._loaded = True

    def start(self, timeout: float = 15.0) -> SlapdServer:
        """Start (again: same port, same data) and wait until slapd answers a bind (as the rootDN).

        On Linux slapd is told to exit when the thread that started it ends (PR_SET_PDEATHSIG), so
        that no directory outlives a killed test run: start servers from the main thread.
        """
        if self.running:
            return self
        if not self._loaded:
            self.load()
        for attempt in range(5):
            try:
                self._start_once(timeout)
                break
            except _PortTaken:
                # Another process took the free port between choosing and binding it: choose again,
                # unless the port is fixed (given, or kept for a restart).
                if self._fixed_port or self._started_once or attempt == 4:
                    raise RuntimeError(f"port {self.port} is in use; log:\n{self.log_tail()}") from None
                self.port = free_port(self.host)
        self._started_once = True
        return self

    def _start_once(self, timeout: float) -> None:
        self._log = open(self.log_path, "ab")
        log_start = self._log.tell()
        self._proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf_path), "-h", f"{self.url}/", "-d", "none"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
        _running.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._reap()
                with open(self.log_path, "rb") as log:
                    log.seek(log_start)
                    if b"Address already in use" in log.read():
                        raise _PortTaken()
                raise RuntimeError(f"slapd exited at start-up; log:\n{self.log_tail()}")
            if self._answers_bind():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not answer on {self.url} within {timeout}s; log:\n{self.log_tail()}")
            time.sleep(0.02)

    def _answers_bind(self) -> bool:
        conn = ldap3.Connection(self.server(connect_timeout=1), self.root_dn, self.root_password, receive_timeout=2)
        try:
            return bool(conn.bind())
        except LDAPException:
            return False
        finally:
            close_connection(conn)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop slapd (SIGTERM, then SIGKILL); the data stays for the next start()."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        _running.discard(self)

    def reset(self) -> None:
        """Back to the demo content (restarted, if it was running)."""
        was_running = self.running
        self.stop()
        self.load()
        if was_running:
            self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> SlapdServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- connections ----------------------------------------------------------------------------

    def server(self, **kwargs):
        """An ``ldap3.Server`` for this directory (keyword arguments go to ldap3)."""
        kwargs.setdefault("get_info", ldap3.NONE)
        kwargs.setdefault("connect_timeout", 2)
        return ldap3.Server(self.host, port=self.port, **kwargs)

    @contextlib.contextmanager
    def connect(self, user: str | None = None, password: str | None = None, **kwargs):
        """``with server.connect() as conn:`` a bound ldap3 connection (default: the service
        account), closed on leaving the block. Failures raise (``raise_exceptions=True``)."""
        user = self.bind_dn if user is None else user
        password = self.bind_password if password is None else password
        kwargs.setdefault("raise_exceptions", True)
        kwargs.setdefault("receive_timeout", 5)
        conn = ldap3.Connection(self.server(), user, password, **kwargs)
        try:
            conn.bind()
            yield conn
        finally:
            close_connection(conn)

    def admin(self):
        """``with server.admin() as conn:`` bound as the rootDN (no access control applies)."""
        return self.connect(self.root_dn, self.root_password)

    # --- changing the directory (as the rootDN) -------------------------------------------------

    def user_dn(self, uid: str) -> str:
        """The current DN of a user, enabled or disabled; KeyError if there is none."""
        with self.admin() as conn:
            conn.search(self.base_dn, f"(&(objectClass=inetOrgPerson)(uid={escape_filter_chars(uid)}))", attributes=[])
            if not conn.entries:
                raise KeyError(uid)
            return conn.entries[0].entry_dn

    def add_user(
        self,
        uid: str,
        password: str,
        *,
        cn: str | None = None,
        sn: str | None = None,
        given_name: str | None = None,
        mail: str | None = None,
        display_name: str | None = None,
        groups: tuple[str, ...] | list[str] = (),
        disabled: bool = False,
    ) -> str:
        """Add a user (and put it in existing groups); returns its DN."""
        given_name = given_name or uid.capitalize()
        sn = sn or "Testsson"
        cn = cn or f"{given_name} {sn}"
        attributes = {
            "uid": uid,
            "cn": cn,
            "sn": sn,
            "givenName": given_name,
            "displayName": display_name or cn,
            "mail": mail or f"{uid}@{MAIL_DOMAIN}",
            "userPassword": ssha(password),
        }
        object_classes = ["top", "person", "organizationalPerson", "inetOrgPerson"]
        if self.flavour == "ad":
            dn = f"cn={escape_rdn(cn)},{self.people_dn}"
            object_classes.append("user")
            attributes.update(
                {
                    "sAMAccountName": uid,
                    "userPrincipalName": f"{uid}@{MAIL_DOMAIN}",
                    "userAccountControl": str(UAC_NORMAL_ACCOUNT | (UAC_ACCOUNTDISABLE if disabled else 0)),
                }
            )
        else:
            dn = f"uid={escape_rdn(uid)},{self.disabled_dn if disabled else self.people_dn}"
        with self.admin() as conn:
            conn.add(dn, object_classes, attributes)
            for group in groups:
                conn.modify(group_dn(group), {"member": [(ldap3.MODIFY_ADD, [dn])]})
        return dn

    def set_password(self, uid: str, password: str) -> None:
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.modify(dn, {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha(password)])]})

    def disable_user(self, uid: str) -> str:
        """Disable: "openldap" moves the entry to ou=disabled (memberships follow); "ad" sets
        userAccountControl bit 2. Returns the user's DN afterwards."""
        if self.flavour == "ad":
            return self._set_account_disabled(uid, True)
        return self._move(uid, self.disabled_dn)

    def enable_user(self, uid: str) -> str:
        """Undo disable_user(); returns the user's DN afterwards."""
        if self.flavour == "ad":
            return self._set_account_disabled(uid, False)
        return self._move(uid, self.people_dn)

    def _set_account_disabled(self, uid: str, disabled: bool) -> str:
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userAccountControl"])
            flags = int(conn.entries[0].userAccountControl.value or UAC_NORMAL_ACCOUNT)
            flags = flags | UAC_ACCOUNTDISABLE if disabled else flags & ~UAC_ACCOUNTDISABLE
            conn.modify(dn, {"userAccountControl": [(ldap3.MODIFY_REPLACE, [str(flags)])]})
        return dn

    def _move(self, uid: str, superior: str) -> str:
        dn = self.user_dn(uid)
        rdn, _, parent = dn.partition(",")
        if parent.lower() == superior.lower():
            return dn
        with self.admin() as conn:
            conn.modify_dn(dn, rdn, new_superior=superior)
        return f"{rdn},{superior}"

    def delete_user(self, uid: str) -> None:
        """Delete the user; the refint overlay removes it from its groups."""
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.delete(dn)

    def add_to_group(self, uid: str, group: str) -> None:
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.modify(group_dn(group), {"member": [(ldap3.MODIFY_ADD, [dn])]})

    def remove_from_group(self, uid: str, group: str) -> None:
        dn = self.user_dn(uid)
        with self.admin() as conn:
            conn.modify(group_dn(group), {"member": [(ldap3.MODIFY_DELETE, [dn])]})

    def add_group(self, name: str, members: tuple[str, ...] | list[str] = (), description: str | None = None) -> str:
        """Add a group with these user ids as members; returns its DN. groupOfNames needs a
        member, so an empty group holds the rootDN as a placeholder (as refint leaves it)."""
        attributes: dict = {"cn": name, "member": [self.user_dn(uid) for uid in members] or [self.root_dn]}
        object_classes = ["top", "groupOfNames"]
        if self.flavour == "ad":
            object_classes.append("group")
            attributes["sAMAccountName"] = name
        if description:
            attributes["description"] = description
        with self.admin() as conn:
            conn.add(group_dn(name), object_classes, attributes)
        return group_dn(name)


# --- fixtures -----------------------------------------------------------------------------------

_session_servers: dict[str, SlapdServer] = {}


def require_slapd() -> None:
    """Skip the test (fail it under CI) when a test directory cannot run here."""
    problem = slapd_problem()
    if problem:
        missing(problem)


def _session_server(tmp_path_factory, flavour: str):
    # One server per flavour even if these fixtures are imported into several modules.
    require_slapd()
    server = _session_servers.get(flavour)
    if server is None:
        server = _session_servers[flavour] = SlapdServer(tmp_path_factory.mktemp(f"slapd-{flavour}"), flavour=flavour)
    server.start()
    yield server
    server.stop()


def _fresh_server(tmp_path, flavour: str):
    require_slapd()
    server = SlapdServer(tmp_path / f"slapd-{flavour}", flavour=flavour)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    """The shared OpenLDAP test directory (demo.ldif). Read it; do not stop or change it."""
    yield from _session_server(tmp_path_factory, "openldap")


@pytest.fixture
def slapd_fresh(tmp_path):
    """An OpenLDAP test directory of this test's own (demo.ldif), stopped after the test."""
    yield from _fresh_server(tmp_path, "openldap")


@pytest.fixture(scope="session")
def slapd_ad(tmp_path_factory):
    """The shared Active-Directory-flavoured test directory. Read it; do not stop or change it."""
    yield from _session_server(tmp_path_factory, "ad")


@pytest.fixture
def slapd_ad_fresh(tmp_path):
    """An Active-Directory-flavoured test directory of this test's own, stopped after the test."""
    yield from _fresh_server(tmp_path, "ad")
