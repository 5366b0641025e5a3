"""The auth service's own settings (environment: RECEPT_AUTH_<NAME>), with safe defaults."""

from shared.config import ROOT, Setting

from .passwords import OWASP_ITERATIONS, OWASP_LANES, OWASP_MEMORY_KIB

SETTINGS = (
    Setting(
        "SIGNING_KEYS_FILE",
        str,
        str(ROOT / "var" / "auth-signing-keys.json"),
        "JSON file of the Ed25519 token-signing keys (created with mode 0600 on first use)",
    ),
    Setting("ACCESS_TOKEN_TTL", int, 300, "seconds an access token is valid", minimum=30),
    Setting("REFRESH_TOKEN_TTL", int, 43_200, "seconds a refresh token is valid if not used", minimum=60),
    Setting("SESSION_MAX_AGE", int, 604_800, "seconds a login session can be refreshed at most", minimum=60),
    Setting("MAX_FAILED_LOGINS", int, 5, "failed logins in a row that lock an account", minimum=1),
    Setting("LOCKOUT_SECONDS", int, 900, "seconds an account stays locked", minimum=1),
    Setting("CLIENT_MAX_FAILURES", int, 20, "failed logins from one client address that block it", minimum=1),
    Setting("CLIENT_WINDOW_SECONDS", int, 900, "window (and block time) of the per-address count", minimum=1),
    Setting("PASSWORD_MIN_LENGTH", int, 12, "shortest accepted local password", minimum=8),
    Setting(
        "ARGON2_MEMORY_KIB",
        int,
        OWASP_MEMORY_KIB,
        "Argon2id memory in KiB (OWASP minimum 19456)",
        minimum=OWASP_MEMORY_KIB,
    ),
    Setting(
        "ARGON2_ITERATIONS", int, OWASP_ITERATIONS, "Argon2id iterations (OWASP minimum 2)", minimum=OWASP_ITERATIONS
    ),
    Setting("ARGON2_LANES", int, OWASP_LANES, "Argon2id parallelism (OWASP minimum 1)", minimum=OWASP_LANES),
    Setting("VENDOR_TENANT", str, "vendor", "slug of the tenant that holds the vendor's own staff"),
    Setting("ALLOW_PLAIN_LDAP", bool, False, "allow directories without LDAPS/StartTLS (tests and demos only)"),
    Setting("LOGIN_HISTORY_DAYS", int, 90, "days login history is kept", minimum=1),
    Setting("PURGE_INTERVAL", float, 3600.0, "seconds between purges of expired login data", minimum=1),
    Setting(
        "TENANT_ANNOUNCE_INTERVAL",
        float,
        3600.0,
        "seconds between the worker's announcements of every tenant (auth.tenant.announced), "
        "from which a service started later learns them",
        minimum=1,
    ),
    # The portal signs its users in through this api; with this token (it holds the same) the browser's
    # address it forwards is the one sign-ins are throttled by (docs/auth.md "Brute-force protection").
    Setting(
        "FORWARDING_TOKEN", str, None, "shared with the portal: lets it forward the browser's address", secret=True
    ),
    Setting("FORWARDING_TOKEN_FILE", str, None, "path of a file holding FORWARDING_TOKEN (a mounted secret)"),
)

MIN_FORWARDING_TOKEN = 32


def forwarding_token(config) -> str | None:
    """The portal's forwarding token, or None (then no forwarded address is believed)."""
    from shared.config import ConfigError, secret_value

    token = secret_value(config, "FORWARDING_TOKEN")
    if token is not None and len(token) < MIN_FORWARDING_TOKEN:
        raise ConfigError(f"FORWARDING_TOKEN: must be at least {MIN_FORWARDING_TOKEN} characters")
    return token
