"""The portal's pages: sign-in, requests, data inventory and audit trail, as server-rendered HTML.

Every page calls the auth, gdpr and audit services over HTTP with the signed-in officer's
own access token, so those services decide what the officer may see (another tenant's
request is a 404 there, and so here).  The browser holds only a signed cookie with a
random session id, a CSRF token and the chosen language; every POST form carries the
CSRF token; no personal value is ever put in a URL (searches and identifiers are POSTed).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from shared.clock import as_utc, utcnow
from shared.config import secret_value
from shared.errors import DomainError, Unauthorized
from shared.http import create_service_app, problem

from . import i18n, present
from .sessions import PortalSession, SessionStore, Tokens
from .upstream import Upstream, UpstreamError, UpstreamUnavailable

log = logging.getLogger("recept.portal")

#: Roles that may use the portal at all; each upstream service still checks its own operations.
PORTAL_ROLES = frozenset({"compliance_officer", "auditor", "vendor_admin", "tenant_admin", "privacy_officer"})

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Machine endpoints answer problem+json as every service does; everything else is a page.
MACHINE_PATHS = ("/healthz", "/readyz", "/openapi.json")

_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")  # the gdpr service's tenant slugs
PAGE = 50
_REFRESH_MARGIN = timedelta(seconds=30)

bp = Blueprint(
    "portal", __name__, template_folder="templates", static_folder="static", static_url_path="/assets"
)  # the app keeps /static for itself


class SessionExpired(Exception):
    """The officer's session ended (idle, too old, or the auth service no longer honours it)."""


class CsrfRejected(Exception):
    """A POST without the session's CSRF token."""


class Portal:
    """What the pages need, built once per app: upstream clients and the session store."""

    def __init__(self, runtime, clock: Callable[[], datetime] = utcnow) -> None:
        config = runtime.config
        timeout = config["UPSTREAM_TIMEOUT"]
        self.runtime = runtime
        self.auth = Upstream(
            "auth", config["AUTH_URL"], timeout, forwarding_token=secret_value(config, "FORWARDING_TOKEN")
        )
        # The public page (public_pages.py) forwards the browser's address to gdpr's rate limits too.
        self.gdpr = Upstream(
            "gdpr", config["GDPR_URL"], timeout, forwarding_token=secret_value(config, "FORWARDING_TOKEN")
        )
        self.audit = Upstream("audit", config["AUDIT_URL"], timeout)
        self.clock = clock
        self.store = SessionStore(
            runtime.db,
            runtime.vault,
            idle=timedelta(minutes=config["SESSION_IDLE_MINUTES"]),
            lifetime=timedelta(hours=config["SESSION_MAX_HOURS"]),
            clock=clock,
        )

    def readiness(self) -> dict[str, Callable[[], None]]:
        return {
            "database": self.runtime.db.ping,
            "auth": self.auth.ping,
            "gdpr": self.gdpr.ping,
            "audit": self.audit.ping,
        }


def portal() -> Portal:
    return current_app.extensions["portal"]


def cookie_secret(runtime) -> bytes:
    """The configured SECRET_KEY, else a key derived from the keyring (same in every worker process)."""
    configured = runtime.config.get("SECRET_KEY")
    if configured:
        return configured.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"recept.portal.session-cookie").derive(
        runtime.keyring.index_key
    )


class _ScopedCookieSession(SecureCookieSessionInterface):
    # Mounted at /portal/ in the embedded run: the cookie goes to the portal only, not to
    # the other services that share the host.
    def get_cookie_path(self, app: Flask) -> str:
        return (request.script_root or "") + "/"


def build_app(runtime, description: str = "") -> Flask:
    """The portal's Flask app on a Runtime (see services.portal.PortalSpec)."""
    ctx = runtime.domain
    app = create_service_app(
        "portal",
        blueprints=[],
        readiness=ctx.readiness(),
        max_content_length=runtime.config["MAX_CONTENT_LENGTH"],
        description=description,
        extensions={"recept": runtime, **runtime.wiring.extensions},
    )
    app.secret_key = cookie_secret(runtime)
    app.session_interface = _ScopedCookieSession()
    app.config.update(
        SESSION_COOKIE_NAME="recept_portal",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.config["COOKIE_SECURE"],
    )
    app.jinja_env.globals.update(
        _=lambda text: i18n.translate(text, language()), csrf_token=csrf_token, languages=i18n.LANGUAGES
    )
    app.jinja_env.filters.update(when=_when, day=_day)
    app.register_blueprint(bp)

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith(MACHINE_PATHS):
            return problem(exc.code or 500, exc.name, exc.description or exc.name)
        return error_page(exc.code or 500, exc.name, exc.description if exc.code not in (404, 405) else None)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, DomainError):  # /readyz's Unavailable, as every service answers it
            return problem(exc.status, exc.title, exc.detail, type_suffix=exc.type_suffix, errors=exc.errors)
        log.error("unhandled error", exc_info=exc)
        if request.path.startswith(MACHINE_PATHS):
            return problem(500, "Internal server error", "the portal failed to handle this request")
        return error_page(500, "Something went wrong", None)

    return app


# --- language, CSRF, formatting ----------------------------------------------------------------


def language() -> str:
    chosen = session.get("lang")
    if chosen in i18n.LANGUAGES:
        return chosen
    return request.accept_languages.best_match(i18n.LANGUAGES) or "en"


def t(text: str) -> str:
    return i18n.translate(text, language())


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _when(value: Any) -> str:
    parsed = value if isinstance(value, datetime) else present.parse_time(value)
    if parsed is None:
        return "" if value is None else str(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(value: Any) -> str:
    parsed = value if isinstance(value, datetime) else present.parse_time(value)
    if parsed is None:
        return "" if value is None else str(value)[:10]
    return parsed.astimezone(UTC).strftime("%Y-%m-%d")


def error_page(status: int, title: str, detail: str | None):
    messages = {
        404: "There is no such page, or it belongs to another tenant.",
        403: "Your roles do not allow this.",
        503: "Try again in a moment.",
    }
    return render_template(
        "error.html", status=status, title=t(title), detail=detail or t(messages.get(status, "Try again in a moment."))
    ), status


def safe_next(target: Any) -> str | None:
    """Only this portal's own paths: an open redirect would let a link send an officer anywhere."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


# --- the officer's session ----------------------------------------------------------------------

OPEN_ENDPOINTS = {
    "portal.login",
    "portal.static",
    "portal.set_language",
    # The public request page (issue 17, public_pages.py): no staff account.
    "portal.public_request",
    "portal.public_verify",
    "portal.public_done",
    "portal.public_download",
}


@bp.before_request
def _before() -> Any:
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise CsrfRejected()
    if request.endpoint in OPEN_ENDPOINTS:
        g.user = None
        return None
    user, expired = portal().store.load(session.get("sid"))
    if user is None:
        return _to_login(expired)
    g.user = user
    return None


def _to_login(expired: bool):
    session.pop("sid", None)
    flash(t("Your session has expired; sign in again." if expired else "Sign in to continue."), "info")
    if request.method == "GET":
        session["next"] = request.script_root + (request.full_path if request.query_string else request.path)
    return redirect(url_for("portal.login"))


@bp.app_context_processor
def _template_context() -> dict[str, Any]:
    return {"user": g.get("user"), "lang": language()}


@bp.errorhandler(CsrfRejected)
def _csrf_rejected(_exc):
    return error_page(
        403, "Forbidden", t("The form has expired or did not come from this portal; reload the page and try again.")
    )


@bp.errorhandler(SessionExpired)
def _session_expired(_exc):
    portal().store.end(session.get("sid"))
    return _to_login(True)


@bp.errorhandler(UpstreamUnavailable)
def _unavailable(exc: UpstreamUnavailable):
    return error_page(503, "A service is not reachable", f"{exc.service}: {t('Try again in a moment.')}")


@bp.errorhandler(UpstreamError)
def _upstream_error(exc: UpstreamError):
    if exc.status == 404:
        return error_page(404, "Not found", None)
    if exc.status == 403:
        return error_page(403, "Forbidden", exc.detail or None)
    if exc.status >= 500:
        return error_page(503, "A service is not reachable", f"{exc.service}: {t('Try again in a moment.')}")
    return error_page(exc.status if exc.status < 500 else 502, "Not possible", exc.detail or exc.title)


def call(upstream: Upstream, method: str, path: str, **kwargs):
    """Call a service as the signed-in officer; a 401 gets one token refresh and one retry."""
    user: PortalSession = g.user
    token = user.access_token
    if user.access_expires_at - _REFRESH_MARGIN <= portal().clock() and user.refresh_token:
        token = _refresh(user)
    try:
        return upstream.call(method, path, token=token, **kwargs)
    except UpstreamError as exc:
        if exc.status != 401:
            raise
    return upstream.call(method, path, token=_refresh(user), **kwargs)


def call_json(upstream: Upstream, method: str, path: str, **kwargs) -> Any:
    reply = call(upstream, method, path, **kwargs)
    try:
        return reply.json()
    except ValueError:
        raise UpstreamUnavailable(upstream.service) from None


def _refresh(user: PortalSession) -> str:
    ctx = portal()
    if not user.refresh_token:
        raise SessionExpired()
    try:
        answer = ctx.auth.json("POST", "/api/v1/auth/refresh", body={"refresh_token": user.refresh_token})
        tokens, principal = _tokens_of(answer)
    except (UpstreamError, Unauthorized, ValueError, KeyError, TypeError):
        raise SessionExpired() from None
    ctx.store.replace_tokens(user.sid, tokens, roles=principal.roles)
    g.user, _ = ctx.store.load(user.sid)
    if g.user is None:
        raise SessionExpired()
    return tokens.access_token


def _tokens_of(answer: Any):
    """Tokens from a login/refresh answer, and the verified principal of its access token."""
    tokens = Tokens(
        access_token=str(answer["access_token"]),
        refresh_token=answer.get("refresh_token"),
        expires_in=int(answer.get("expires_in") or 300),
    )
    principal = portal().runtime.tokens.verify(tokens.access_token)
    return tokens, principal


def quoted(identifier: str) -> str:
    if not _ID.match(identifier or ""):
        abort(404)
    return urllib.parse.quote(identifier, safe="")


# --- sign-in, sign-out, language -----------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    ctx = portal()
    if request.method == "GET":
        if ctx.store.load(session.get("sid"))[0] is not None:
            return redirect(url_for("portal.requests_list"))
        return render_template("login.html", form={}, error=None)
    form = {k: request.form.get(k, "").strip() for k in ("tenant", "username")}
    password = request.form.get("password", "")
    errors = {k: t("is required") for k, v in (*form.items(), ("password", password)) if not v}
    errors.update({k: t("is too long") for k, v in (*form.items(), ("password", password)) if len(v) > 200})
    if errors:
        return render_template("login.html", form=form, errors=errors, error=t("Check the fields marked below.")), 422
    failed = t("Sign-in failed: check the tenant, username and password.")
    try:
        answer = ctx.auth.json(
            "POST",
            "/api/v1/auth/login",
            forwarded_for=request.remote_addr,
            body={"tenant": form["tenant"], "username": form["username"], "password": password},
        )
        tokens, principal = _tokens_of(answer)
    except UpstreamError as exc:
        if exc.status in (400, 401, 403, 422, 429):
            return render_template("login.html", form=form, error=failed), 401
        raise
    except (Unauthorized, ValueError, KeyError, TypeError):
        return render_template("login.html", form=form, error=failed), 401
    if not principal.has_any_role(PORTAL_ROLES):
        _revoke(tokens)
        return render_template(
            "login.html", form=form, error=t("Your account has no role that may use the compliance portal.")
        ), 403
    ctx.store.purge()
    sid = ctx.store.create(
        tokens, user_id=principal.user_id, tenant=principal.tenant, roles=principal.roles, username=form["username"]
    )
    target = safe_next(session.get("next"))
    lang = session.get("lang")
    # A fresh cookie (new session id, new CSRF token) at every sign-in: no session fixation.
    session.clear()
    session.update(sid=sid, csrf=secrets.token_urlsafe(32))
    if lang in i18n.LANGUAGES:
        session["lang"] = lang
    return redirect(target or url_for("portal.requests_list"))


def _revoke(tokens: Tokens) -> None:
    try:
        portal().auth.call(
            "POST",
            "/api/v1/auth/logout",
            token=tokens.access_token,
            body={"refresh_token": tokens.refresh_token} if tokens.refresh_token else {},
        )
    except (UpstreamError, UpstreamUnavailable) as exc:
        # The local session ends regardless; the refresh token then lapses at its own expiry.
        log.warning("sign-out: the auth service did not revoke the session (%s)", type(exc).__name__)


@bp.post("/logout")
def logout():
    user: PortalSession = g.user
    _revoke(Tokens(user.access_token, user.refresh_token, 0))
    portal().store.end(user.sid)
    lang = session.get("lang")
    session.clear()
    if lang in i18n.LANGUAGES:
        session["lang"] = lang
    flash(t("You have signed out."), "info")
    return redirect(url_for("portal.login"))


@bp.post("/language")
def set_language():
    chosen = request.form.get("lang")
    if chosen in i18n.LANGUAGES:
        session["lang"] = chosen
    return redirect(safe_next(request.form.get("back")) or url_for("portal.requests_list"))


@bp.get("/")
def index():
    return redirect(url_for("portal.requests_list"))


# --- requests ------------------------------------------------------------------------------


def _filters() -> dict[str, str]:
    args = request.args
    filters = {}
    if args.get("status") in present.STATUSES:
        filters["status"] = args["status"]
    if args.get("type") in present.TYPES:
        filters["type"] = args["type"]
    if _SLUG.match(args.get("tenant", "")):
        filters["tenant"] = args["tenant"]
    if args.get("overdue") == "true":
        filters["overdue"] = "true"
    if re.match(r"^[0-9]{1,9}$", args.get("offset", "")):
        filters["offset"] = args["offset"]
    return filters


@bp.get("/requests")
def requests_list():
    filters = _filters()
    answer = call_json(portal().gdpr, "GET", "/api/v1/requests", query={**filters, "limit": str(PAGE)})
    now = portal().clock()
    rows = [{**r, "is_overdue": present.is_overdue(r, now)} for r in present.items_of(answer)]
    offset = int(filters.get("offset", 0))
    pages = {
        "previous": max(offset - PAGE, 0) if offset else None,
        "next": offset + PAGE if len(rows) >= PAGE else None,
    }
    return render_template(
        "requests.html", rows=rows, filters=filters, statuses=present.STATUSES, types=present.TYPES, pages=pages
    )


IDENTIFIER_FIELDS = ("email", "phone", "personnummer", "username")
# Care context (issue 15): a resident known by name and birth date, optionally narrowed by unit or register.
CARE_FIELDS = ("name", "birth_date", "unit", "register")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# The customer's instruction a vendor officer records for a request on the customer's processor data (issue 15).
INSTRUCTION_FIELDS = ("given_by", "given_at", "reference")


def _is_privacy_officer(user: PortalSession) -> bool:
    """The customer's privacy officer: its own tenant only, and its requests are themselves the instruction."""
    return user.has_any_role(("privacy_officer",)) and not user.has_any_role(("compliance_officer",))


@bp.route("/requests/new", methods=["GET", "POST"])
def request_new():
    user: PortalSession = g.user
    controller = _is_privacy_officer(user)
    if request.method == "GET":
        return render_template(
            "request_new.html", form={"type": "export", "tenant": user.tenant or ""}, errors={}, controller=controller
        )
    names = (
        "type",
        "tenant",
        "reason",
        *IDENTIFIER_FIELDS,
        *CARE_FIELDS,
        *(f"instruction_{n}" for n in INSTRUCTION_FIELDS),
    )
    form = {k: request.form.get(k, "").strip() for k in names}
    if controller:
        form["tenant"] = user.tenant or ""
    errors: dict[str, str] = {}
    if form["type"] not in present.TYPES:
        errors["type"] = t("is not a valid choice")
    if not _SLUG.match(form["tenant"]):
        errors["tenant"] = t("is required") if not form["tenant"] else t("is not a valid choice")
    for name in (*IDENTIFIER_FIELDS, *CARE_FIELDS, "reason"):
        if len(form[name]) > (2000 if name == "reason" else 200):
            errors[name] = t("is too long")
    if form["birth_date"] and not _DATE.match(form["birth_date"]):
        errors["birth_date"] = t("is not a valid date")
    # Name and birth date go together; unit and register only narrow them down (the gdpr service checks too).
    if bool(form["name"]) != bool(form["birth_date"]) or ((form["unit"] or form["register"]) and not form["name"]):
        missing = "birth_date" if form["name"] else "name"
        errors.setdefault(missing, t("is required with the name and birth date"))
    subject = {k: form[k] for k in (*IDENTIFIER_FIELDS, *CARE_FIELDS) if form[k]}
    if not subject:
        errors["subject"] = t("Give at least one identifier.")
    for name in INSTRUCTION_FIELDS:
        if len(form[f"instruction_{name}"]) > 200:
            errors[f"instruction_{name}"] = t("is too long")
    if errors:
        return render_template("request_new.html", form=form, errors=errors, controller=controller), 422
    body: dict[str, Any] = {"type": form["type"], "tenant": form["tenant"], "subject": subject}
    if form["reason"]:
        body["reason"] = form["reason"]
    if not controller and any(form[f"instruction_{n}"] for n in INSTRUCTION_FIELDS):
        body["instruction"] = {n: form[f"instruction_{n}"] for n in INSTRUCTION_FIELDS}
    try:
        created = call_json(portal().gdpr, "POST", "/api/v1/requests", body=body)
    except UpstreamError as exc:
        if exc.status not in (400, 409, 422):
            raise
        # Field errors come back as "subject.email" etc.; show each beside its field.
        for problem_ in exc.errors:
            name = str(problem_.get("field", "")).removeprefix("subject.").removeprefix("body.")
            name = "instruction_given_by" if name == "instruction" else name.replace("instruction.", "instruction_")
            errors[name if name in form else "subject" if name.startswith("subject") else "form"] = str(
                problem_.get("message", "")
            )
        return render_template(
            "request_new.html", form=form, errors=errors, problem=exc.detail or exc.title, controller=controller
        ), exc.status
    flash(t("The request was opened."), "success")
    return redirect(url_for("portal.request_detail", request_id=str(created["id"])))


@bp.get("/requests/<request_id>")
def request_detail(request_id: str):
    user: PortalSession = g.user
    item = call_json(portal().gdpr, "GET", f"/api/v1/requests/{quoted(request_id)}")
    services = present.services_of(item)
    preview_hash, candidates, previewed = present.preview_of(item)
    return render_template(
        "request_detail.html",
        item=item,
        notices=_notices(request_id),
        services=services,
        preview_hash=preview_hash,
        candidates=candidates,
        unanswered=[service for service, status in previewed.items() if status != "done"],
        erasure=present.erasure_table(services),
        overdue=present.is_overdue(item, portal().clock()),
        # Any request awaiting approval: exports need a second officer by default too (issue 14).
        can_decide=present.can_decide(item, user.user_id),
        can_confirm=present.can_confirm(item) and _is_privacy_officer(user),
        is_requester=str(item.get("requested_by") or "") == user.user_id,
        can_retry=present.can_retry(item),
        export_ready=present.export_ready(item),
        refreshing=portal().runtime.config["PAGE_REFRESH_SECONDS"] if item.get("status") in present.RUNNING else 0,
    )


def _notices(request_id: str) -> dict[str, Any] | None:
    """What the person was told (issue 17): the request's notices, or None when gdpr keeps none for it."""
    try:
        answer = call_json(portal().gdpr, "GET", f"/api/v1/requests/{quoted(request_id)}/notices")
    except UpstreamError:
        return None  # an older gdpr service without the endpoint: the page shows the request without it
    if not isinstance(answer, dict) or not answer.get("origin"):
        return None
    return answer


def _decide(request_id: str, action: str, body: dict, done: str):
    try:
        call(portal().gdpr, "POST", f"/api/v1/requests/{quoted(request_id)}/{action}", body=body)
    except UpstreamError as exc:
        if exc.status not in (400, 403, 409, 422):
            raise
        flash(f"{t('Not possible')}: {exc.detail or exc.title}", "error")
    else:
        flash(t(done), "success")
    return redirect(url_for("portal.request_detail", request_id=request_id))


@bp.post("/requests/<request_id>/approve")
def request_approve(request_id: str):
    # The approval names the preview it was made on and the candidates ticked (issue 15); the gdpr
    # service answers 409 if the preview changed since the page was shown, 422 for an unknown id.
    decision = {
        "preview_hash": request.form.get("preview_hash", "")[:64],
        "confirmed": list(dict.fromkeys(v[:64] for v in request.form.getlist("confirmed")))[:1000],
    }
    return _decide(request_id, "approve", decision, "The request was approved.")


@bp.post("/requests/<request_id>/preview")
def request_preview(request_id: str):
    # The data changed since the preview (a resident was corrected): the services look again; the
    # old preview's hash goes stale, so an approval must be made on the new one (issue 15).
    return _decide(request_id, "preview", {}, "The services are looking again; approve on the new preview.")


@bp.post("/requests/<request_id>/confirm")
def request_confirm(request_id: str):
    return _decide(request_id, "confirm", {}, "The instruction was confirmed; the request runs.")


@bp.post("/requests/<request_id>/reject")
def request_reject(request_id: str):
    reason = request.form.get("reason", "").strip()[:2000]
    return _decide(request_id, "reject", {"reason": reason} if reason else {}, "The request was rejected.")


@bp.post("/requests/<request_id>/retry")
def request_retry(request_id: str):
    return _decide(request_id, "retry", {}, "The request was sent again to the services that had not answered.")


@bp.get("/requests/<request_id>/certificate")
def request_certificate(request_id: str):
    """The erasure certificate as a printable page (issue 15); 409 from gdpr until it is anchored."""
    signed = call_json(portal().gdpr, "GET", f"/api/v1/requests/{quoted(request_id)}/certificate")
    body = signed.get("certificate") if isinstance(signed, dict) else None
    if not isinstance(body, dict):
        raise UpstreamUnavailable(portal().gdpr.service)
    return render_template(
        "certificate.html",
        signed=signed,
        cert=body,
        results=[
            {"service": r.get("service"), **item} for r in body.get("results") or [] for item in r.get("erasure") or []
        ],
    )


@bp.get("/requests/<request_id>/certificate.json")
def request_certificate_json(request_id: str):
    """The certificate as the gdpr service signed it, to keep or check offline (``verify-certificate``)."""
    reply = call(portal().gdpr, "GET", f"/api/v1/requests/{quoted(request_id)}/certificate")
    return Response(
        reply.body,
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="recept-erasure-certificate-{request_id}.json"'},
    )


@bp.get("/requests/<request_id>/export")
def request_export(request_id: str):
    reply = call(portal().gdpr, "GET", f"/api/v1/requests/{quoted(request_id)}/export", accept="application/zip")
    return Response(
        reply.body,
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="recept-export-{request_id}.zip"'},
    )


# --- inventory -----------------------------------------------------------------------------


@bp.get("/inventory")
def inventory():
    answer = call_json(portal().gdpr, "GET", "/api/v1/inventory")
    rows = present.inventory_rows(answer)
    return render_template(
        "inventory.html",
        rows=rows,
        by_service=present.group_by(rows, "service"),
        by_subjects=present.group_by(rows, "data_subjects"),
        chart=present.counts_chart(rows),
        generated_at=answer.get("generated_at") if isinstance(answer, dict) else None,
    )


@bp.get("/inventory.csv")
def inventory_csv():
    reply = call(portal().gdpr, "GET", "/api/v1/inventory", query={"format": "csv"}, accept="text/csv")
    return Response(
        reply.body,
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="recept-data-inventory.csv"'},
    )


# --- records of processing per customer (issue 15, GDPR art. 30(2)) ------------------------


@bp.get("/records")
def records():
    """One customer's records: the privacy officer its own tenant's; vendor officers choose a tenant
    (a slug is no personal value, so it may be in the URL)."""
    user: PortalSession = g.user
    own = _is_privacy_officer(user)
    chosen = (user.tenant or "") if own else request.args.get("tenant", "").strip()
    if not chosen:
        return render_template("records.html", tenant="", own=own, document=None, rows=[], error=None)
    if not _SLUG.match(chosen):
        error = t("is not a valid choice")
        return render_template("records.html", tenant=chosen, own=own, document=None, rows=[], error=error), 422
    document = call_json(portal().gdpr, "GET", f"/api/v1/tenants/{urllib.parse.quote(chosen, safe='')}/records")
    rows = present.inventory_rows(document)
    return render_template(
        "records.html",
        tenant=chosen,
        own=own,
        document=document if isinstance(document, dict) else {},
        rows=rows,
        by_service=present.group_by(rows, "service"),
        error=None,
    )


@bp.get("/records.csv")
def records_csv():
    user: PortalSession = g.user
    chosen = (user.tenant or "") if _is_privacy_officer(user) else request.args.get("tenant", "").strip()
    if not _SLUG.match(chosen):
        abort(404)
    path = f"/api/v1/tenants/{urllib.parse.quote(chosen, safe='')}/records"
    reply = call(portal().gdpr, "GET", path, query={"format": "csv"}, accept="text/csv")
    return Response(
        reply.body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="recept-records-{chosen}.csv"'},
    )


# --- audit ---------------------------------------------------------------------------------

AUDIT_FIELDS = ("subject", "actor", "resource", "type", "since", "until")


def _instant(value: str) -> str | None:
    """A datetime-local value (read as UTC) as RFC 3339, or None when it is not one."""
    try:
        parsed = as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.route("/audit", methods=["GET", "POST"])
def audit():
    if request.method == "GET":
        return render_template("audit.html", form={}, errors={}, results=None)
    # POSTed, not a query string: subject references and actors stay out of URLs and history.
    form = {k: request.form.get(k, "").strip() for k in (*AUDIT_FIELDS, "cursor")}
    errors = {k: t("is too long") for k, v in form.items() if len(v) > 200}
    query = {k: form[k] for k in ("subject", "actor", "resource", "type", "cursor") if form[k]}
    for name in ("since", "until"):
        if form[name]:
            instant = _instant(form[name])
            if instant is None:
                errors[name] = t("is not a valid date and time")
            query[name] = instant
    if errors:
        return render_template("audit.html", form=form, errors=errors, results=None), 422
    try:
        answer = call_json(portal().audit, "GET", "/api/v1/events", query=query)
    except UpstreamError as exc:
        if exc.status not in (400, 422):
            raise
        errors = {str(e.get("field", "form")): str(e.get("message", "")) for e in exc.errors} or {
            "form": exc.detail or exc.title
        }
        return render_template("audit.html", form=form, errors=errors, results=None), 422
    events = [
        {**e, "actor_id": present.actor_of(e), "resource_ref": present.resource_of(e)} for e in present.items_of(answer)
    ]
    return render_template(
        "audit.html",
        form=form,
        errors={},
        results=events,
        next_cursor=answer.get("next_cursor") if isinstance(answer, dict) else None,
    )


@bp.get("/audit/chains")
def audit_chains():
    answer = call_json(portal().audit, "GET", "/api/v1/chains/verify")
    return render_template("chains.html", chains=present.chains_of(answer))


from . import public_pages as _public_pages  # noqa: E402,F401 - registers the public page's routes on bp
