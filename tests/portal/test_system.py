"""The portal in Chromium on top of the REAL auth, gdpr, audit, orders and crm services (the embedded
system: one process, in-memory bus, SQLite per service): an export that completes and downloads, and
an erasure opened by one compliance officer and approved by another (issue 9, R1, R2, R3); orders holds the
municipality's registers as its processor, so the vendor's officers record the municipality's instruction
and its privacy officer, who sees only its own tenant, confirms it (issue 15)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.portal.browser import LAPTOP, chromium, screenshot, sign_in
from tests.portal.embedded import embedded_portal

pytestmark = pytest.mark.integration  # every service and its workers in one process on a real port

PASSWORD = "a long enough passphrase 42"


def _seed(auth, s) -> None:
    auth.create_tenant(s, None, "vendor", "The vendor")
    auth.create_tenant(
        s,
        None,
        "kommun",
        "A municipality",
        {"version": "PUB 1", "signed_on": "2025-01-15", "signatory": "The municipal board"},
    )
    for username in ("officer.one", "officer.two"):
        auth.create_user(
            s, None, "vendor", username=username, roles=["compliance_officer"], password=PASSWORD, source="local"
        )
    auth.create_user(
        s, None, "kommun", username="dpo.kommun", roles=["privacy_officer"], password=PASSWORD, source="local"
    )
    auth.create_user(
        s,
        None,
        "kommun",
        username="anna.subject",
        roles=["staff"],
        password=PASSWORD,
        email="anna.subject@example.org",
        source="local",
    )


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Every service plus the portal at /portal/, workers running, on one local port."""
    with embedded_portal(tmp_path_factory.mktemp("system"), seed=_seed) as port:
        yield f"http://127.0.0.1:{port}/portal"


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def open_request(page, base: str, type_: str, email: str) -> str:
    page.goto(f"{base}/requests/new")
    page.check(f"input[name=type][value={type_}]")
    page.fill("#tenant", "kommun")
    page.fill("#email", email)
    page.fill("#instruction-given-by", "Kommunens dataskyddsombud")
    page.fill("#instruction-given-at", "2026-01-12")
    page.fill("#instruction-reference", "KS 2026/12")
    page.click("button:has-text('Submit request')")
    page.wait_for_selector("#request-status")
    assert email not in page.url
    return page.url


def confirm_as_the_municipality(browser, base: str, url: str) -> None:
    """The municipality's privacy officer signs in, finds the request among its tenant's only, and confirms."""
    page = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(page, base, "kommun", "dpo.kommun", PASSWORD)
    page.goto(f"{base}/requests")
    assert {t.strip() for t in page.locator("table td.tenant").all_inner_texts()} == {"kommun"}
    page.goto(url)
    assert "KS 2026/12" in page.locator("#instruction").inner_text()
    page.click("button:has-text('Confirm instruction')")
    page.wait_for_selector("[data-status=in_progress], [data-status=completed]")
    assert "privacy_officer (kommun)" in page.locator("#approvals").inner_text()
    screenshot(page, "system-confirmation")
    page.context.close()


def confirm_exact(page) -> None:
    """Issue 15: the approver ticks the preview's exact candidates (none is ticked in advance)."""
    page.wait_for_selector("table.preview")
    for box in page.locator("input[name=confirmed][data-match=exact]").all():
        box.check()


def test_export_through_the_real_services_completes_and_downloads(system, browser):
    """R1 end to end: the gdpr service fans out to every service, the package downloads with a manifest."""
    first = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(first, system, "vendor", "officer.one", PASSWORD)
    url = open_request(first, system, "export", "anna.subject@example.org")
    # Exports need a second officer by default too (issue 14).
    first.wait_for_selector("[data-status=awaiting_approval]")
    first.context.close()
    page = browser.new_context(viewport=LAPTOP, accept_downloads=True).new_page()
    sign_in(page, system, "vendor", "officer.two", PASSWORD)
    page.goto(url)
    confirm_exact(page)
    page.click("button:has-text('Approve')")
    page.wait_for_selector("[data-status=awaiting_confirmation]")
    confirm_as_the_municipality(browser, system, url)
    page.goto(url)
    page.wait_for_selector("[data-status=completed]", timeout=60_000)
    screenshot(page, "system-export")
    with page.expect_download() as download_info:
        page.click("text=Download export (ZIP)")
    with zipfile.ZipFile(io.BytesIO(download_info.value.path().read_bytes())) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest and any(name.startswith("auth/") for name in names)
    page.close()


def test_erasure_through_the_real_services_needs_a_second_officer(system, browser):
    """R2 end to end: the requester cannot approve; a second officer does; the erasure table fills in."""
    first = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(first, system, "vendor", "officer.one", PASSWORD)
    url = open_request(first, system, "erase", "anna.subject@example.org")
    first.wait_for_selector("[data-status=awaiting_approval]")
    assert first.locator("button:has-text('Approve')").count() == 0

    second = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(second, system, "vendor", "officer.two", PASSWORD)
    second.goto(url)
    confirm_exact(second)
    second.click("button:has-text('Approve')")
    second.wait_for_selector("[data-status=awaiting_confirmation]")
    assert second.locator("button:has-text('Confirm instruction')").count() == 0
    confirm_as_the_municipality(browser, system, url)
    second.goto(url)
    second.wait_for_selector("[data-status=completed]", timeout=60_000)
    table = second.locator("table.erasure").inner_text()
    assert "auth" in table
    screenshot(second, "system-erasure")
    second.context.close()
    first.context.close()


def test_inventory_from_the_real_services_lists_their_categories(system, browser):
    """R3: the inventory the services announced, as the portal shows it."""
    page = browser.new_page(viewport=LAPTOP)
    sign_in(page, system, "vendor", "officer.one", PASSWORD)
    page.goto(f"{system}/inventory")
    services = page.locator("table.inventory tr.group th").all_inner_texts()
    assert {"auth", "gdpr"} <= {s.split()[0] for s in services}
    screenshot(page, "system-inventory")
    page.close()


def test_the_municipalitys_privacy_officer_reads_its_own_records_of_processing(system, browser):
    """Issue 15 (art. 30(2)): the counts the real services announce per tenant, the municipality's
    agreement from auth, and only its own tenant; a vendor officer reads any tenant's."""
    page = browser.new_page(viewport=LAPTOP)
    sign_in(page, system, "kommun", "dpo.kommun", PASSWORD)
    accounts = page.locator("table.records tr[data-service=auth][data-kind=user_account] td.num")
    for _ in range(20):  # the services announce every second; the first may still be on its way
        page.goto(f"{system}/records?tenant=vendor")  # ignored for a privacy officer: its own only
        if accounts.count() and accounts.inner_text().isdigit():
            break
        page.wait_for_timeout(500)
    assert page.locator("#records-tenant").inner_text() == "kommun"
    assert (
        "PUB 1" in page.locator("#agreement").inner_text() and "2025-01-15" in page.locator("#agreement").inner_text()
    )
    assert accounts.inner_text() in ("1", "2")  # dpo.kommun and anna.subject (unless an erasure test ran first)
    storage = page.locator("table.records tr[data-service=orders][data-kind=individual]").inner_text()
    assert "orders" in storage and page.locator("table.records tr[data-service=orders]").count() >= 1
    screenshot(page, "system-records")
    page.close()

    vendor = browser.new_page(viewport=LAPTOP)
    sign_in(vendor, system, "vendor", "officer.one", PASSWORD)
    vendor.goto(f"{system}/records?tenant=vendor")
    officers = vendor.locator("table.records tr[data-service=auth][data-kind=user_account] td.num")
    assert officers.inner_text() == "2"  # officer.one and officer.two, not the municipality's accounts
    vendor.close()
