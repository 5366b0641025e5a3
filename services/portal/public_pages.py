"""The public request page (issue 17): a person without a staff account asks the vendor for a copy or the
erasure of their data, proves their address with a one-time code, and later downloads the export once.

No sign-in: these endpoints are open (``OPEN_ENDPOINTS``), every form still carries the CSRF token of
the cookie session, and the session holds only the pending verification's id (never an address).  The
gdpr service does the work and the rate limiting (the browser's address is forwarded with the token
the portal shares with it); the portal turns its problems into the form's field errors.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, redirect, render_template, request, session, url_for

from .upstream import UpstreamError
from .web import bp, error_page, language, portal, t

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
ENDPOINTS = {"portal.public_request", "portal.public_verify", "portal.public_done", "portal.public_download"}
_FIELDS = ("type", "scope", "customer", "email", "phone", "channel")


def _gdpr(method: str, path: str, body: dict[str, Any] | None = None, accept: str = "application/json"):
    return portal().gdpr.call(method, path, body=body, forwarded_for=request.remote_addr, accept=accept)


def _errors(exc: UpstreamError) -> dict[str, str]:
    found = {str(e.get("field", "form")): t(str(e.get("message", ""))) for e in exc.errors}
    return found or {"form": exc.detail or exc.title}


def _busy():
    return error_page(
        429, t("Too many requests"), t("Too many requests from this address or network; try again later.")
    )


@bp.route("/public", methods=["GET", "POST"])
def public_request():
    options = _gdpr("GET", "/api/v1/public/customers").json()
    if request.method == "GET":
        return render_template("public_request.html", form={}, errors={}, options=options)
    form = {k: request.form.get(k, "").strip() for k in _FIELDS}
    body: dict[str, Any] = {k: v for k, v in form.items() if v}
    body["language"] = language()
    if body.get("scope") != "customer":
        body.pop("customer", None)
    try:
        started = _gdpr("POST", "/api/v1/public/verifications", body).json()
    except UpstreamError as exc:
        if exc.status == 429:
            return _busy()
        if exc.status != 422:
            raise
        return render_template("public_request.html", form=form, errors=_errors(exc), options=options), 422
    session["verification"] = started["verification_id"]
    session["channel"] = started["channel"]
    return redirect(url_for("portal.public_verify"))


@bp.route("/public/verify", methods=["GET", "POST"])
def public_verify():
    verification_id = session.get("verification")
    if not isinstance(verification_id, str):
        return redirect(url_for("portal.public_request"))
    channel = session.get("channel", "email")
    if request.method == "GET":
        return render_template("public_verify.html", errors={}, channel=channel)
    code = request.form.get("code", "").strip()
    if not re.fullmatch(r"\d{6}", code):
        errors = {"code": t("enter the six digits of the code")}
        return render_template("public_verify.html", errors=errors, channel=channel), 422
    try:
        opened = _gdpr("POST", f"/api/v1/public/verifications/{verification_id}/confirm", {"code": code}).json()
    except UpstreamError as exc:
        if exc.status == 429:
            return _busy()
        if exc.status == 410:
            session.pop("verification", None)
            return error_page(410, t("The code has expired"), t("The code has expired or was already used; ask again."))
        if exc.status != 422:
            raise
        return render_template("public_verify.html", errors=_errors(exc), channel=channel), 422
    session.pop("verification", None)
    session["opened"] = {k: opened[k] for k in ("request_id", "type", "due_at", "customer_must_confirm")}
    return redirect(url_for("portal.public_done"))


@bp.get("/public/done")
def public_done():
    opened = session.get("opened")
    if not isinstance(opened, dict):
        return redirect(url_for("portal.public_request"))
    return render_template("public_done.html", opened=opened)


@bp.route("/public/download/<token>", methods=["GET", "POST"])
def public_download(token: str):
    if not _TOKEN.match(token):
        return error_page(404, "Not found", None)
    if request.method == "GET":
        # A page, not the file: a mail scanner that follows the link must not spend the one download.
        response = Response(render_template("public_download.html", token=token))
        response.headers["Cache-Control"] = "no-store"
        return response
    try:
        reply = _gdpr("POST", "/api/v1/public/downloads", {"token": token}, accept="application/octet-stream")
    except UpstreamError as exc:
        if exc.status == 429:
            return _busy()
        if exc.status in (404, 410):
            return error_page(410, t("This link cannot be used"), t("This link was already used or has expired."))
        raise
    disposition = reply.headers.get("Content-Disposition") or 'attachment; filename="recept-export.rcpt"'
    return Response(
        reply.body,
        mimetype="application/octet-stream",
        headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
    )
