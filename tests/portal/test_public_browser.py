"""Issue 17 in Chromium on the REAL services (the embedded system): a person with no staff account walks
from the public page through the e-mailed code to a completed export that downloads once, encrypted to
the passphrase sent by SMS (a second download fails), and a refused request whose notice carries the
reason.  A real SMTP listener receives the e-mails; the SMS sender is the recording fake."""

from __future__ import annotations

import io
import json
import re
import urllib.request
import zipfile

import pytest

from services.gdpr.handover import decrypt_package
from tests.gdpr import sms
from tests.gdpr.mailbox import mailbox
from tests.portal.browser import LAPTOP, chromium, screenshot, sign_in, watch_console
from tests.portal.embedded import embedded_portal
from tests.support import wait_for

pytestmark = pytest.mark.integration  # every service and its workers in one process on a real port

PASSWORD = "a long enough passphrase 42"
PERSON = "sara.svensson@example.org"
REFUSED = "olle.olsson@example.org"


def _seed(auth, s) -> None:
    auth.create_tenant(s, None, "vendor", "The vendor")
    auth.create_tenant(s, None, "kommun", "A municipality")
    auth.create_user(
        s, None, "vendor", username="officer.one", roles=["compliance_officer"], password=PASSWORD, source="local"
    )


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    sms.SENT.clear()
    with mailbox() as box:

        def settings(port: int) -> dict:
            return {
                "gdpr": {
                    "SMTP_PORT": box.port,
                    "SMS_SENDER": "tests.gdpr.sms:create",
                    "PUBLIC_CUSTOMERS": ["kommun=Exempel kommun"],
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/portal",
                    "NOTICE_RETRY_INTERVAL": 0.2,
                }
            }

        with embedded_portal(tmp_path_factory.mktemp("public-system"), settings=settings, seed=_seed) as port:
            yield {"base": f"http://127.0.0.1:{port}", "mail": box}


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def api(base: str, method: str, path: str, body=None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local test server
        return json.loads(response.read())


def officer_token(base: str) -> str:
    body = {"tenant": "vendor", "username": "officer.one", "password": PASSWORD}
    return api(base, "POST", "/auth/api/v1/auth/login", body)["access_token"]


def ask_publicly(page, system, email: str, type_: str) -> None:
    """The person's part: the public page, the e-mailed code, the receipt."""
    base, box = system["base"], system["mail"]
    page.goto(f"{base}/portal/public")
    page.check(f"input[name=type][value={type_}]")
    page.fill("#email", email)
    page.fill("#phone", "070-765 43 21")
    screenshot(page, f"public-request-{type_}")
    page.press("#email", "Enter")  # keyboard-usable: Enter submits
    page.wait_for_selector("#code")
    assert email not in page.url
    assert wait_for(lambda: box.bodies(email), timeout=15)
    page.fill("#code", box.last_code(email))
    page.click("button:has-text('Confirm')")
    page.wait_for_selector("#public-received")


def open_request_id(base: str, token: str) -> str:
    """The person's request, once its preview is complete (issue 15: nothing is approved blind)."""

    def waiting():
        return api(base, "GET", "/gdpr/api/v1/requests?status=awaiting_approval", token=token)["items"]

    assert wait_for(waiting, timeout=30)
    return waiting()[0]["id"]


def approve_exact(base: str, token: str, request_id: str) -> None:
    """The officer confirms the preview's exact candidates, bound to the preview's hash."""
    preview = api(base, "GET", f"/gdpr/api/v1/requests/{request_id}", token=token)["preview"]
    exact = [c["id"] for entry in preview["services"].values() for c in entry["candidates"] if c["match"] == "exact"]
    body = {"preview_hash": preview["hash"], "confirmed": exact}
    api(base, "POST", f"/gdpr/api/v1/requests/{request_id}/approve", body, token=token)


def test_a_person_asks_verifies_and_downloads_the_export_once(system, browser):
    base, box = system["base"], system["mail"]
    page = browser.new_context(viewport=LAPTOP, accept_downloads=True).new_page()
    errors = watch_console(page)
    ask_publicly(page, system, PERSON, "export")
    assert wait_for(lambda: any("We received your request" in b for b in box.bodies(PERSON)), timeout=30)

    token = officer_token(base)
    request_id = open_request_id(base, token)
    approve_exact(base, token, request_id)
    assert wait_for(lambda: any("/public/download/" in b for b in box.bodies(PERSON)), timeout=90)
    link = re.search(r"(http://\S+/public/download/[A-Za-z0-9_-]+)", box.bodies(PERSON)[-1]).group(1)
    assert wait_for(lambda: sms.SENT, timeout=30)
    passphrase = re.search(r"is: (\S+)$", sms.SENT[-1][1]).group(1)

    page.goto(link)
    screenshot(page, "public-download")
    with page.expect_download() as download_info:
        page.click("button:has-text('Download (encrypted file)')")
    data = download_info.value.path().read_bytes()
    assert data.startswith(b"RCPTPKG1")  # encrypted: nothing readable without the passphrase
    with zipfile.ZipFile(io.BytesIO(decrypt_package(data, passphrase))) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["files"] and all(entry["path"] in archive.namelist() for entry in manifest["files"])
    assert errors == []

    page.goto(link)
    page.click("button:has-text('Download (encrypted file)')")  # the second download fails
    page.wait_for_selector("text=This link was already used or has expired.")
    screenshot(page, "public-download-used")
    notices = api(base, "GET", f"/gdpr/api/v1/requests/{request_id}/notices", token=token)
    assert {n["kind"] for n in notices["items"] if n["status"] == "sent"} >= {"received", "completed", "passphrase"}
    page.context.close()


def test_a_refused_request_tells_the_person_why(system, browser):
    base, box = system["base"], system["mail"]
    page = browser.new_context(viewport=LAPTOP).new_page()
    ask_publicly(page, system, REFUSED, "erase")
    token = officer_token(base)
    request_id = open_request_id(base, token)
    reason = "We could not find you in any of our systems"
    api(base, "POST", f"/gdpr/api/v1/requests/{request_id}/reject", {"reason": reason}, token=token)
    assert wait_for(lambda: any(reason in b for b in box.bodies(REFUSED)), timeout=30)
    # The officer sees on the request's page what the person was told.
    officer = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(officer, f"{base}/portal", "vendor", "officer.one", PASSWORD)
    officer.goto(f"{base}/portal/requests/{request_id}")
    officer.wait_for_selector("table.notices tr[data-notice=rejected]")
    screenshot(officer, "public-request-notices")
    officer.context.close()
    page.context.close()


def test_the_public_page_in_swedish_marks_a_bad_address_at_its_field(system, browser):
    page = browser.new_context(viewport=LAPTOP).new_page()
    page.goto(f"{system['base']}/portal/public")
    page.click("button[lang=sv]")
    page.wait_for_selector("h1:has-text('Dina uppgifter: begär en kopia eller radering')")
    page.fill("#email", "inte-en-adress")
    page.press("#email", "Enter")
    page.wait_for_selector("#email[aria-invalid=true][aria-describedby=email-error]")
    assert page.locator("#email-error").inner_text()
    assert "inte-en-adress" not in page.url
    assert page.get_attribute("html", "lang") == "sv"
    page.context.close()
