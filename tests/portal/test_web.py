"""The portal's pages against fake upstream services: sign-in, CSRF, sessions, tenants, requests,
inventory and audit (issue 9)."""

from __future__ import annotations

import io
import json
import re
import zipfile

from openapi_spec_validator import validate as validate_openapi

from services.portal import SPEC
from services.portal.sessions import Tokens
from services.portal.web import CSP
from tests.portal.conftest import FORWARDING_TOKEN, PASSWORD, csrf_of, form_token, sign_in
from tests.support import TokenMint


def cookie_value(client) -> str:
    cookie = client.get_cookie("recept_portal")
    assert cookie is not None
    return cookie.value


# --- sign-in and the session cookie ---------------------------------------------------------


def test_login_page_has_strict_security_headers_and_a_guarded_cookie(client):
    """Issue 9: strict CSP, no framing; the session cookie is HttpOnly and SameSite."""
    response = client.get("/login")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    html = response.get_data(as_text=True)
    assert "<script" not in html and "style=" not in html


def test_sign_in_keeps_the_tokens_server_side(client, app, fakes, runtime):
    """Issue 9: the browser's cookie holds only a random session id and a CSRF token, never a token."""
    response = sign_in(client)
    assert response.status_code == 302 and response.headers["Location"].endswith("/requests")
    raw = cookie_value(client)
    payload = app.session_interface.get_signing_serializer(app).loads(raw)
    assert set(payload) == {"sid", "csrf"}
    login_answer = [c for c in fakes.calls if c["path"].endswith("/auth/login")]
    assert len(login_answer) == 1
    assert not any(t in raw for t in fakes.refresh_tokens)
    assert "alice" not in raw


def test_sign_in_tells_auth_the_browsers_address_for_its_throttling(client, fakes):
    """Auth blocks per client address; the portal must not make every officer one client."""
    client.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    sign_in(client)
    [login] = [c for c in fakes.calls if c["path"].endswith("/auth/login")]
    assert login["forwarded_for"] == "203.0.113.7"  # the browser's address, not the portal's
    assert login["forwarding_token"] == FORWARDING_TOKEN  # which auth believes only with this token


def test_without_a_forwarding_token_the_portal_names_no_address(runtime, fakes):
    runtime.config.values["FORWARDING_TOKEN"] = None
    client = SPEC.create_app(runtime=runtime).test_client()
    client.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    sign_in(client)
    [login] = [c for c in fakes.calls if c["path"].endswith("/auth/login")]
    assert login["forwarded_for"] is None and login["forwarding_token"] is None


def test_wrong_password_gets_one_generic_message(client):
    """API.md: one generic answer for every kind of sign-in failure."""
    response = sign_in(client, password="wrong")
    assert response.status_code == 401
    assert "Sign-in failed: check the tenant, username and password." in response.get_data(as_text=True)
    assert client.get("/requests").status_code == 302


def test_account_without_a_portal_role_is_refused_and_its_session_revoked(client, fakes):
    """Only compliance roles use the portal; the token the login produced is revoked at once."""
    response = sign_in(client, username="kitchen")
    assert response.status_code == 403
    assert len(fakes.logouts) == 1
    assert client.get("/requests").status_code == 302


def test_empty_sign_in_fields_are_reported_without_calling_auth(client, fakes):
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"tenant": "", "username": "", "password": "", "csrf_token": csrf_of(page.get_data(as_text=True))},
    )
    assert response.status_code == 422
    assert not [c for c in fakes.calls if c["path"].endswith("/auth/login")]


# --- CSRF ---------------------------------------------------------------------------------------


def test_post_without_csrf_token_is_rejected(officer, fakes):
    """Issue 9: every form is CSRF-protected; a forged POST changes nothing upstream."""
    before = len(fakes.requests)
    response = officer.post("/requests/new", data={"type": "export", "tenant": "t1", "email": "anna@example.org"})
    assert response.status_code == 403
    assert len(fakes.requests) == before
    assert not [c for c in fakes.calls if c["method"] == "POST" and c["service"] == "gdpr"]


def test_post_with_another_sessions_csrf_token_is_rejected(app, officer, fakes):
    other = app.test_client()
    stolen = csrf_of(other.get("/login").get_data(as_text=True))
    response = officer.post("/logout", data={"csrf_token": stolen})
    assert response.status_code == 403
    assert fakes.logouts == []
    assert officer.get("/requests").status_code == 200


def test_sign_in_without_csrf_token_is_rejected(client, fakes):
    """Login CSRF: a third-party page cannot sign a browser in to an attacker's account."""
    response = client.post("/login", data={"tenant": "t1", "username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert not [c for c in fakes.calls if c["path"].endswith("/auth/login")]


def test_sign_in_issues_a_new_csrf_token(client):
    """No session fixation: the pre-login cookie's token dies at sign-in."""
    before = csrf_of(client.get("/login").get_data(as_text=True))
    sign_in(client)
    assert form_token(client) != before


# --- session expiry, refresh and sign-out -----------------------------------------------------


def test_idle_session_expires_and_sends_the_officer_to_sign_in(officer, clock, runtime):
    """Issue 9: sessions expire; the officer is told so, and the tokens are shredded."""
    assert officer.get("/requests").status_code == 200
    clock.advance(minutes=31)
    response = officer.get("/requests?status=completed")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    page = officer.get("/login").get_data(as_text=True)
    assert "Your session has expired; sign in again." in page
    from services.portal.web import Portal

    assert Portal(runtime).store.count() == 0
    # After signing in again the officer lands where they were going.
    response = officer.post(
        "/login", data={"tenant": "t1", "username": "alice", "password": PASSWORD, "csrf_token": csrf_of(page)}
    )
    assert response.headers["Location"].endswith("/requests?status=completed")


def test_activity_keeps_a_session_alive_until_its_absolute_end(officer, clock):
    for _ in range(5):
        clock.advance(minutes=20)
        assert officer.get("/requests").status_code == 200
    clock.advance(hours=11)
    assert officer.get("/requests").status_code == 302


def test_expired_access_token_is_refreshed_transparently(officer, fakes, clock):
    """The short-lived access token is renewed with the refresh token; the officer notices nothing."""
    clock.advance(minutes=5)  # past expires_in (300 s) minus the margin
    assert officer.get("/requests").status_code == 200
    assert [c for c in fakes.calls if c["path"].endswith("/auth/refresh")]


def test_upstream_401_triggers_one_refresh_and_a_retry(officer, fakes, mint, runtime):
    from services.portal.web import Portal

    store = Portal(runtime).store
    sid = officer.application.session_interface.get_signing_serializer(officer.application).loads(
        cookie_value(officer)
    )["sid"]
    user, _ = store.load(sid)
    foreign = TokenMint()  # a token signed with a key the fake does not trust
    store.replace_tokens(sid, Tokens(foreign.token(sub=user.user_id, tenant="t1"), user.refresh_token, 300))
    assert officer.get("/requests").status_code == 200
    assert len([c for c in fakes.calls if c["path"].endswith("/auth/refresh")]) == 1


def test_refused_refresh_ends_the_session(officer, fakes, clock):
    fakes.refuse_refresh = True
    clock.advance(minutes=5)
    response = officer.get("/requests")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert "Your session has expired" in officer.get("/login").get_data(as_text=True)


def test_sign_out_revokes_the_session_at_auth_and_forgets_it(officer, fakes, runtime):
    """Issue 9: sign-out revokes the token at the auth service; the portal keeps nothing."""
    token = form_token(officer)
    response = officer.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert len(fakes.logouts) == 1
    logout = fakes.logouts[0]
    assert logout["authorization"].startswith("Bearer ") and logout["body"]["refresh_token"]
    assert logout["body"]["refresh_token"] not in fakes.refresh_tokens
    from services.portal.web import Portal

    assert Portal(runtime).store.count() == 0
    assert officer.get("/requests").status_code == 302
    assert "You have signed out." in officer.get("/login").get_data(as_text=True)


# --- tenants and requests -------------------------------------------------------------------


def test_officer_cannot_see_another_tenants_requests(officer, fakes):
    """Multi-tenancy: the gdpr service filters by the officer's token; the portal shows a 404."""
    mine = fakes.add_request("t1", "export", "completed")
    theirs = fakes.add_request("t2", "erase", "awaiting_approval")
    listing = officer.get("/requests").get_data(as_text=True)
    assert mine["id"][:8] in listing and theirs["id"][:8] not in listing
    response = officer.get(f"/requests/{theirs['id']}")
    assert response.status_code == 404
    assert "belongs to another tenant" in response.get_data(as_text=True)
    assert (
        officer.post(f"/requests/{theirs['id']}/approve", data={"csrf_token": form_token(officer)}).status_code == 404
    )
    assert fakes.requests[theirs["id"]]["status"] == "awaiting_approval"


def test_opening_a_request_sends_identifiers_only_in_bodies(officer, fakes):
    """No personal data in URLs: identifiers go in POST bodies, the redirect names only the request id."""
    values = {"email": "anna.andersson@example.org", "phone": "+46701234567", "personnummer": "19121212-1212"}
    response = officer.post(
        "/requests/new",
        data={
            "type": "export",
            "tenant": "t1",
            "csrf_token": form_token(officer),
            **values,
            "reason": "Anna asked by letter",
        },
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    created = [c for c in fakes.calls if c["method"] == "POST" and c["path"] == "/gdpr/api/v1/requests"]
    assert len(created) == 1
    body = json.loads(created[0]["body"])
    assert body == {"type": "export", "tenant": "t1", "subject": values, "reason": "Anna asked by letter"}
    for value in (*values.values(), "anna", "Anna"):
        assert value not in location
        assert not any(value in url for url in fakes.urls_called())
    page = officer.get(location).get_data(as_text=True)
    assert "The request was opened." in page


def test_request_without_identifier_is_refused_before_reaching_gdpr(officer, fakes):
    response = officer.post("/requests/new", data={"type": "erase", "tenant": "t1", "csrf_token": form_token(officer)})
    assert response.status_code == 422
    assert "Give at least one identifier." in response.get_data(as_text=True)
    assert not [c for c in fakes.calls if c["method"] == "POST" and c["service"] == "gdpr"]


def test_upstream_field_errors_are_shown_beside_their_field(officer):
    response = officer.post(
        "/requests/new",
        data={"type": "export", "tenant": "t1", "email": "not-an-address", "csrf_token": form_token(officer)},
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="email-error"' in html and "is not a valid e-mail address" in html
    assert 'value="not-an-address"' in html  # the officer does not retype the form


def test_erase_requester_cannot_approve_but_a_second_officer_can(app, officer, fakes):
    """R2 with four eyes: approve/reject are hidden from the officer who opened the erase request."""
    officer.post(
        "/requests/new",
        data={"type": "erase", "tenant": "t1", "email": "anna@example.org", "csrf_token": form_token(officer)},
    )
    (rid,) = [r["id"] for r in fakes.requests.values() if r["type"] == "erase"]
    page = officer.get(f"/requests/{rid}").get_data(as_text=True)
    assert "/approve" not in page and "/reject" not in page
    assert "another compliance officer must approve" in page

    second = app.test_client()
    assert sign_in(second, username="bob").status_code == 302
    page = second.get(f"/requests/{rid}").get_data(as_text=True)
    assert "/approve" in page and "/reject" in page
    response = second.post(f"/requests/{rid}/approve", data={"csrf_token": csrf_of(page), **preview_form(page)})
    assert response.status_code == 302
    assert "The request was approved." in second.get(f"/requests/{rid}").get_data(as_text=True)
    page = second.get(f"/requests/{rid}").get_data(as_text=True)
    assert 'data-status="completed"' in page
    assert "legal claims (art. 17(3)(e))" in page and "2031-01-01" in page and "anonymised" in page


def test_upstream_refusal_of_a_decision_is_shown_as_a_message(officer, fakes):
    item = fakes.add_request("t1", "erase", "awaiting_approval", requested_by="other-officer")
    page = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    form = {"csrf_token": csrf_of(page), **preview_form(page)}
    officer.post(f"/requests/{item['id']}/approve", data=form)
    response = officer.post(f"/requests/{item['id']}/approve", data=form)
    assert response.status_code == 302
    assert "the request is not awaiting approval" in officer.get(f"/requests/{item['id']}").get_data(as_text=True)


def preview_form(html: str, match: str = "exact") -> dict:
    """The approve form as an approver fills it in: the preview's hash, the ``match`` candidates ticked."""
    hash_ = re.search(r'name="preview_hash" value="([0-9a-f]*)"', html)
    assert hash_, "the page has no approve form"
    ticked = re.findall(rf'name="confirmed" value="([0-9a-f]+)" id="[^"]+" data-match="{match}"', html)
    return {"preview_hash": hash_.group(1), "confirmed": ticked}


def test_the_preview_shows_masked_cards_and_approval_sends_the_ticked_ones_with_the_hash(officer, fakes):
    """Issue 15: candidates with checkboxes, none ticked in advance; the approval names the preview's hash
    and only the ticked candidates; a stale preview is refused with the gdpr service's message."""
    item = fakes.add_request("t1", "erase", "awaiting_approval", requested_by="other-officer")
    page = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert "individual, register Avd 3, born 1938, initials G. L., 12 orders" in page
    assert "3 call(s) from a number shared by 3 callers" in page
    assert page.count('name="confirmed"') == 3 and "checked" not in page
    assert 'form="approve-form"' in page and "Did not answer the preview: auth" in page
    form = preview_form(page)
    assert form["confirmed"] == [f"{item['id'][:8]}a1"]
    stale = officer.post(
        f"/requests/{item['id']}/approve",
        data={"csrf_token": csrf_of(page), "preview_hash": "0" * 64, "confirmed": form["confirmed"]},
    )
    assert stale.status_code == 302 and "stale preview" in officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert fakes.requests[item["id"]]["status"] == "awaiting_approval"
    officer.post(f"/requests/{item['id']}/approve", data={"csrf_token": csrf_of(page), **form})
    assert fakes.requests[item["id"]]["status"] == "in_progress"
    assert fakes.requests[item["id"]]["confirmed"] == [f"{item['id'][:8]}a1"]
    call = [c for c in fakes.calls if c["path"].endswith("/approve")][-1]
    assert json.loads(call["body"]) == {"preview_hash": item["preview"]["hash"], "confirmed": form["confirmed"]}


def test_reject_sends_the_reason_in_the_body(officer, fakes):
    item = fakes.add_request("t1", "erase", "awaiting_approval", requested_by="other-officer")
    token = form_token(officer, f"/requests/{item['id']}")
    officer.post(f"/requests/{item['id']}/reject", data={"csrf_token": token, "reason": "not the data subject"})
    assert fakes.requests[item["id"]]["status"] == "rejected"
    (call,) = [c for c in fakes.calls if c["path"].endswith("/reject")]
    assert json.loads(call["body"]) == {"reason": "not the data subject"}


def test_retry_is_offered_for_a_partial_request_and_resends(officer, fakes):
    item = fakes.add_request("t1", "erase", "partially_completed", requested_by="x")
    item["services"][0]["status"] = "silent"
    page = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert "/retry" in page
    officer.post(f"/requests/{item['id']}/retry", data={"csrf_token": csrf_of(page)})
    assert [c for c in fakes.calls if c["path"].endswith("/retry")]


def test_list_marks_overdue_requests_and_filters(officer, fakes):
    """GDPR art. 12(3): overdue requests are visible."""
    late = fakes.add_request("t1", "erase", "in_progress", due_in_days=-3)
    fakes.add_request("t1", "export", "completed")
    html = officer.get("/requests").get_data(as_text=True)
    assert html.count('class="overdue"') == 1 and "Overdue" in html
    html = officer.get("/requests?overdue=true&type=erase&status=bogus").get_data(as_text=True)
    assert late["id"][:8] in html
    (call,) = [c for c in fakes.calls if c["path"] == "/gdpr/api/v1/requests" and "overdue" in c["url"]]
    assert "status=" not in call["url"]  # an unknown status is dropped, not forwarded


def test_in_progress_request_page_refreshes_itself_and_completes(officer, fakes):
    item = fakes.add_request("t1", "export", "in_progress")
    first = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert 'http-equiv="refresh"' in first
    second = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert 'data-status="completed"' in second and 'http-equiv="refresh"' not in second
    assert "Download export (ZIP)" in second


def test_export_package_downloads_as_a_zip_with_its_manifest(officer, fakes):
    """R1: the export package reaches the officer as the gdpr service built it."""
    item = fakes.add_request("t1", "export", "completed")
    response = officer.get(f"/requests/{item['id']}/export")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["request_id"] == item["id"]


def test_malformed_request_id_is_a_404_without_an_upstream_call(officer, fakes):
    before = len(fakes.calls)
    assert officer.get("/requests/..%2F..%2Finventory").status_code == 404
    assert len(fakes.calls) == before


# --- inventory -------------------------------------------------------------------------------


def test_inventory_groups_categories_marks_special_ones_and_draws_counts(officer):
    """R3, R5, R16: the record of processing activities, roles shown, art. 9 data marked, counts charted."""
    html = officer.get("/inventory").get_data(as_text=True)
    for text in (
        "orders",
        "crm",
        "individual",
        "order",
        "case",
        "care recipients",
        "customer contacts",
        "processor",
        "controller",
        "special category",
        "By category of data subjects",
    ):
        assert text in html
    assert html.count('class="special"') == 1
    assert html.count("<rect ") == 3 and ">310<" in html and ">42<" in html


def test_inventory_csv_downloads(officer):
    response = officer.get("/inventory.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.get_data(as_text=True).startswith("service,kind")


# --- audit -------------------------------------------------------------------------------------


def test_audit_search_is_posted_and_forwards_the_filters(officer, fakes):
    """R9: search the trail by subject reference, actor and time range, without putting them in the URL."""
    fakes.events.append(
        {
            "id": "e1",
            "type": "orders.order.changed",
            "time": "2025-03-01T10:00:00Z",
            "actor": {"id": "u-7", "tenant": "t1"},
            "tenant": "t1",
            "subject": "orders:individual:abc",
            "resource": {"type": "order", "id": "o-1"},
            "data": {"fields": ["quantity"]},
        }
    )
    assert officer.get("/audit").status_code == 200
    response = officer.post(
        "/audit",
        data={
            "csrf_token": form_token(officer, "/audit"),
            "subject": "orders:individual:abc",
            "actor": "u-7",
            "since": "2025-01-01T00:00",
            "until": "",
        },
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "orders.order.changed" in html and "order:o-1" in html
    (call,) = [c for c in fakes.calls if c["path"] == "/audit/api/v1/events"]
    assert "since=2025-01-01T00:00:00Z" in call["url"] and "until" not in call["url"]


def test_audit_search_with_a_bad_time_is_refused(officer, fakes):
    response = officer.post("/audit", data={"csrf_token": form_token(officer, "/audit"), "since": "yesterday"})
    assert response.status_code == 422 and "is not a valid date and time" in response.get_data(as_text=True)
    assert not [c for c in fakes.calls if c["path"] == "/audit/api/v1/events"]


def test_chain_verification_shows_the_first_bad_entry(officer):
    html = officer.get("/audit/chains").get_data(as_text=True)
    assert 'data-chain="tenant:t1"' in html and 'data-chain="tenant:t2"' in html
    assert html.count("chain-bad") == 1 and "hash mismatch" in html and "e-18" in html


# --- errors, health, language --------------------------------------------------------------------


def test_unreachable_service_renders_a_503_page(officer, fakes):
    fakes.down.add("gdpr")
    response = officer.get("/requests")
    assert response.status_code == 503 and response.mimetype == "text/html"
    assert "A service is not reachable" in response.get_data(as_text=True)


def test_unknown_page_is_an_html_404_but_machine_endpoints_stay_json(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert client.get("/healthz").get_json() == {"status": "ok"}
    response = client.post("/healthz")
    assert response.status_code == 405 and response.mimetype == "application/problem+json"


def test_readiness_checks_the_services_the_portal_calls(client, fakes):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.get_json()["checks"]) == {"database", "auth", "gdpr", "audit"}
    fakes.down.add("audit")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["errors"] == [{"field": "audit", "message": "is not reachable"}]


def test_openapi_document_is_valid(client):
    validate_openapi(client.get("/openapi.json").get_json())


def test_labels_switch_to_swedish(officer):
    token = form_token(officer)
    response = officer.post("/language", data={"csrf_token": token, "lang": "sv", "back": "/inventory"})
    assert response.headers["Location"].endswith("/inventory")
    html = officer.get("/inventory").get_data(as_text=True)
    assert '<html lang="sv">' in html and "Registerförteckning" in html


def test_language_switch_does_not_redirect_off_site(officer):
    response = officer.post(
        "/language", data={"csrf_token": form_token(officer), "lang": "en", "back": "//evil.example/"}
    )
    assert response.headers["Location"].endswith("/requests")


# --- the customer's privacy officer (issue 15) --------------------------------------------------


def test_a_privacy_officer_opens_for_its_own_tenant_only_and_gives_no_instruction(client, fakes):
    fakes.add_account("t1", "pia", PASSWORD, roles=("privacy_officer",))
    assert sign_in(client, "pia").status_code == 302
    page = client.get("/requests/new").get_data(as_text=True)
    assert 'id="instruction"' not in page and "readonly" in page and 'id="controller-note"' in page
    response = client.post(
        "/requests/new",
        data={"csrf_token": csrf_of(page), "type": "erase", "tenant": "t2", "email": "anna@example.org"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    (sent,) = [c for c in fakes.calls if c["method"] == "POST" and c["path"] == "/gdpr/api/v1/requests"]
    body = json.loads(sent["body"])
    assert body["tenant"] == "t1" and "instruction" not in body


def test_a_vendor_officer_records_the_customers_instruction(officer, fakes):
    page = officer.get("/requests/new").get_data(as_text=True)
    assert 'id="instruction"' in page
    officer.post(
        "/requests/new",
        data={
            "csrf_token": csrf_of(page),
            "type": "erase",
            "tenant": "t1",
            "email": "anna@example.org",
            "instruction_given_by": "Pia P., dataskyddsombud",
            "instruction_given_at": "2026-01-12",
            "instruction_reference": "KS 2026/12",
        },
    )
    (sent,) = [c for c in fakes.calls if c["method"] == "POST" and c["path"] == "/gdpr/api/v1/requests"]
    assert json.loads(sent["body"])["instruction"] == {
        "given_by": "Pia P., dataskyddsombud",
        "given_at": "2026-01-12",
        "reference": "KS 2026/12",
    }


def test_the_privacy_officer_confirms_a_request_awaiting_confirmation(client, fakes):
    fakes.add_account("t1", "pia", PASSWORD, roles=("privacy_officer",))
    item = fakes.add_request("t1", "erase", "awaiting_confirmation")
    item["links"]["confirm"] = f"/api/v1/requests/{item['id']}/confirm"
    item["instruction"] = {"given_by": "Pia P.", "given_at": "2026-01-12", "reference": "KS 2026/12"}
    item["approvals"] = [
        {"step": "approved", "role": "compliance_officer", "tenant": "vendor", "at": item["created_at"]}
    ]
    sign_in(client, "pia")
    page = client.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert "Confirm instruction" in page and "KS 2026/12" in page and "compliance_officer (vendor)" in page
    response = client.post(f"/requests/{item['id']}/confirm", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 302
    assert fakes.requests[item["id"]]["status"] == "in_progress"


def test_a_vendor_officer_sees_no_confirm_button(officer, fakes):
    item = fakes.add_request("t1", "erase", "awaiting_confirmation")
    item["links"]["confirm"] = f"/api/v1/requests/{item['id']}/confirm"
    page = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert "Confirm instruction" not in page and "privacy officer to confirm" in page


def test_a_privacy_officer_is_not_offered_the_vendor_wide_pages(client, fakes):
    fakes.add_account("t1", "pia", PASSWORD, roles=("privacy_officer",))
    sign_in(client, "pia")
    page = client.get("/requests").get_data(as_text=True)
    assert "/requests/new" in page and "/inventory" not in page and "/audit" not in page


# --- records of processing per customer, care-context identifiers, preview again (issue 15) -------


def test_a_privacy_officer_reads_its_own_tenants_records_and_cannot_choose_another(client, fakes):
    """Art. 30(2): its tenant's counts and agreement; ?tenant= is ignored for it (its own only)."""
    fakes.add_account("t1", "pia", PASSWORD, roles=("privacy_officer",))
    sign_in(client, "pia")
    assert "/records" in client.get("/requests").get_data(as_text=True)  # in its navigation
    page = client.get("/records?tenant=t2").get_data(as_text=True)
    assert 'id="records-chooser"' not in page and 'id="records-tenant">t1<' in page
    assert "DPA 2.0" in page and "2025-06-01" in page and "orders database, table individuals" in page
    assert re.search(r'data-kind="individual" data-service="orders">.*?<td class="num">12</td>', page, re.S)
    assert re.search(r'data-kind="case" data-service="crm">.*?<td class="num">—</td>', page, re.S)
    called = [c["path"] for c in fakes.calls if "/records" in c["path"]]
    assert called == ["/gdpr/api/v1/tenants/t1/records"]
    csv_reply = client.get("/records.csv?tenant=t2")
    assert csv_reply.mimetype == "text/csv" and "orders,individual,12" in csv_reply.get_data(as_text=True)


def test_a_vendor_officer_chooses_the_tenant_and_an_unknown_one_is_404(officer, fakes):
    page = officer.get("/records").get_data(as_text=True)
    assert 'id="records-chooser"' in page and "Choose a tenant" in page
    other = officer.get("/records?tenant=t2").get_data(as_text=True)
    assert 'id="records-tenant">t2<' in other and "none on record" in other
    assert officer.get("/records?tenant=nosuch").status_code == 404
    assert officer.get("/records?tenant=Bad%20Slug").status_code == 422
    form_token(officer)
    officer.post("/language", data={"csrf_token": form_token(officer), "lang": "sv", "back": "/records"})
    swedish = officer.get("/records?tenant=t1").get_data(as_text=True)
    assert "Register över behandling" in swedish and "Personuppgiftsbiträdesavtal" in swedish


def test_a_resident_is_asked_for_by_name_and_birth_date(client, fakes):
    """The care context: name + birth date (+ unit, register) reach the gdpr service as the subject."""
    fakes.add_account("t1", "pia", PASSWORD, roles=("privacy_officer",))
    sign_in(client, "pia")
    page = client.get("/requests/new").get_data(as_text=True)
    assert 'id="care-context"' in page and 'name="birth_date" type="date"' in page
    fields = {"csrf_token": csrf_of(page), "type": "erase", "tenant": "t1"}
    response = client.post(
        "/requests/new", data={**fields, "name": "Greta Lindqvist", "birth_date": "1938-04-07", "unit": "Avd 3"}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    (sent,) = [c for c in fakes.calls if c["method"] == "POST" and c["path"] == "/gdpr/api/v1/requests"]
    assert json.loads(sent["body"])["subject"] == {
        "name": "Greta Lindqvist",
        "birth_date": "1938-04-07",
        "unit": "Avd 3",
    }
    assert "Greta" not in response.headers["Location"]
    # A name without a birth date, or a malformed date: field errors, nothing sent.
    alone = client.post("/requests/new", data={**fields, "name": "Greta Lindqvist"})
    assert alone.status_code == 422 and 'id="birth_date-error"' in alone.get_data(as_text=True)
    bad = client.post("/requests/new", data={**fields, "name": "Greta Lindqvist", "birth_date": "7 april"})
    assert bad.status_code == 422 and "is not a valid date" in bad.get_data(as_text=True)
    only_unit = client.post("/requests/new", data={**fields, "unit": "Avd 3"})
    assert only_unit.status_code == 422 and 'id="name-error"' in only_unit.get_data(as_text=True)
    assert len([c for c in fakes.calls if c["method"] == "POST" and c["path"] == "/gdpr/api/v1/requests"]) == 1


def test_a_request_awaiting_approval_can_be_previewed_again(officer, fakes):
    item = fakes.add_request("t1", "erase", "awaiting_approval")
    page = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert 'id="preview-again"' in page and "Preview again" in page
    response = officer.post(f"/requests/{item['id']}/preview", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/requests/{item['id']}")
    assert fakes.previews_again == [item["id"]]
    assert "approve on the new preview" in officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    done = fakes.add_request("t1", "export", "completed")
    assert 'id="preview-again"' not in officer.get(f"/requests/{done['id']}").get_data(as_text=True)


# --- the erasure certificate (issue 15) ----------------------------------------------------------


def test_the_erasure_certificate_is_a_printable_page_linked_from_the_request(officer, fakes):
    from services.gdpr.certificate import problem

    item = fakes.add_request("t1", "erase", "completed")
    detail = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert 'id="certificate-link"' not in detail  # not anchored yet: no link
    pending = officer.get(f"/requests/{item['id']}/certificate")
    assert pending.status_code == 409 and "not anchored yet" in pending.get_data(as_text=True)
    fakes.anchor(item["id"])
    detail = officer.get(f"/requests/{item['id']}").get_data(as_text=True)
    assert f'href="/requests/{item["id"]}/certificate"' in detail
    page = officer.get(f"/requests/{item['id']}/certificate")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Erasure certificate" in html and item["id"] in html and "data-print" in html
    # What each service did, what was kept and why, the anchor and the key.
    assert "legal claims (art. 17(3)(e))" in html and "2031-01-01" in html and "accountability (art. 5(2))" in html
    assert "tenant:t1 #42" in html and fakes.certificate_keys.key_id in html
    assert html.count("<tr>") >= 5 + 2  # header rows plus auth, orders (2 kinds), crm, audit and 2 retained
    assert "onclick" not in html  # the CSP allows no inline script: the print button's script is a file
    script = officer.get("/assets/print.js")
    script.close()
    assert script.status_code == 200
    # The signed JSON, as gdpr answered it, verifies.
    download = officer.get(f"/requests/{item['id']}/certificate.json")
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert problem(json.loads(download.get_data()), fakes.certificate_keys.public_keys) is None
    # In Swedish.
    officer.post("/language", data={"csrf_token": form_token(officer), "lang": "sv", "back": "/requests"})
    swedish = officer.get(f"/requests/{item['id']}/certificate").get_data(as_text=True)
    assert "Raderingsintyg" in swedish and "Kvarhållet, med rättslig grund" in swedish
    # Another tenant's officer does not see it.
    other = fakes.add_request("t2", "erase", "completed")
    fakes.anchor(other["id"])
    assert officer.get(f"/requests/{other['id']}/certificate").status_code == 404
