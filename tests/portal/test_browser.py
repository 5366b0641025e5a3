"""The portal in a real browser (Debian's Chromium, headless) against fake upstream services:
sign-in, an export that completes and downloads, a four-eyes erasure, the inventory and the audit
pages, at a laptop's and a tablet's width, with a screenshot of each main page (issue 9).

tests/portal/test_system.py runs the same flows against the real auth, gdpr and audit services.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.portal.browser import LAPTOP, TABLET, chromium, fits_width, screenshot, serve, sign_in, watch_console
from tests.portal.conftest import PASSWORD

pytestmark = pytest.mark.integration  # Chromium drives the embedded system: a real browser and server


@pytest.fixture
def portal(app):
    with serve(app) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_export_request_completes_and_its_zip_downloads(browser, portal, fakes):
    """R1: sign in, open an export request, watch it complete, download the ZIP and read its manifest."""
    page = browser.new_page(viewport=LAPTOP, accept_downloads=True)
    errors = watch_console(page)
    sign_in(page, portal, "t1", "alice", PASSWORD)
    screenshot(page, "requests")
    page.click("text=New request")
    page.check("input[name=type][value=export]")
    page.fill("#tenant", "t1")
    page.fill("#email", "anna.andersson@example.org")
    screenshot(page, "new-request")
    page.click("button:has-text('Submit request')")
    page.wait_for_selector("#request-status")
    assert "anna" not in page.url
    # The page refreshes itself while in progress; the fake completes on the next poll.
    page.wait_for_selector("[data-status=completed]", timeout=15_000)
    screenshot(page, "export-request")
    with page.expect_download() as download_info:
        page.click("text=Download export (ZIP)")
    data = download_info.value.path().read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        for entry in manifest["files"]:
            assert entry["path"] in archive.namelist()
    assert errors == []
    page.close()


def test_erase_request_is_approved_by_a_second_officer(browser, portal, fakes):
    """R2: one officer opens an erasure, another approves it, and the erasure table shows what was done."""
    alice = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(alice, portal, "t1", "alice", PASSWORD)
    alice.goto(f"{portal}/requests/new")
    alice.check("input[name=type][value=erase]")
    alice.fill("#email", "anna.andersson@example.org")
    alice.click("button:has-text('Submit request')")
    alice.wait_for_selector("[data-status=awaiting_approval]")
    assert alice.locator("button:has-text('Approve')").count() == 0
    request_url = alice.url

    bob = browser.new_context(viewport=TABLET).new_page()
    sign_in(bob, portal, "t1", "bob", PASSWORD)
    bob.goto(request_url)
    # Issue 15: the preview's masked cards, none ticked; bob ticks the one that is the person.
    preview = bob.locator("table.preview")
    assert "initials G. L., 12 orders" in preview.inner_text()
    assert "3 call(s) from a number shared by 3 callers" in preview.inner_text()
    boxes = bob.locator("input[name=confirmed]")
    assert boxes.count() == 3 and all(not box.is_checked() for box in boxes.all())
    bob.check("input[name=confirmed][data-match=exact]")
    screenshot(bob, "erase-preview-tablet")
    bob.click("button:has-text('Approve')")
    bob.wait_for_selector("[data-status=completed]", timeout=15_000)
    (item,) = [r for r in fakes.requests.values() if r["type"] == "erase"]
    assert item["confirmed"] == [c["id"] for c in item["preview"]["services"]["orders"]["candidates"][:1]]
    table = bob.locator("table.erasure")
    assert table.locator("tbody tr").count() == 5
    assert "legal claims" in table.inner_text() and "anonymised" in table.inner_text()
    assert fits_width(bob)
    screenshot(bob, "erase-request-tablet")
    bob.context.close()
    alice.context.close()


def test_inventory_lists_categories_with_a_chart_at_both_widths(browser, portal, fakes):
    """R3: the record of processing activities, readable at a laptop's and a tablet's width."""
    for name, viewport in (("inventory", LAPTOP), ("inventory-tablet", TABLET)):
        page = browser.new_page(viewport=viewport)
        errors = watch_console(page)
        sign_in(page, portal, "t1", "alice", PASSWORD)
        page.goto(f"{portal}/inventory")
        kinds = page.locator("table.inventory tbody tr[data-kind]").evaluate_all(
            "rows => rows.map(r => r.dataset.kind)"
        )
        assert kinds == ["case", "individual", "order"]
        assert page.locator("figure.chart svg rect").count() == 3
        assert page.locator(".special-badge").count() == 1
        assert fits_width(page)
        assert errors == []
        screenshot(page, name)
        page.close()


def test_audit_search_and_chain_verification_pages(browser, portal, fakes):
    """R9: search the trail and see each tenant chain's verification, the first bad entry included."""
    fakes.events.append(
        {
            "id": "e1",
            "type": "orders.order.placed",
            "time": "2025-03-01T10:00:00Z",
            "actor": {"id": "u-7", "tenant": "t1"},
            "tenant": "t1",
            "subject": "orders:individual:abc",
            "resource": {"type": "order", "id": "o-1"},
            "data": {"quantity": 2},
        }
    )
    page = browser.new_page(viewport=LAPTOP)
    sign_in(page, portal, "t1", "alice", PASSWORD)
    page.goto(f"{portal}/audit")
    page.fill("#subject", "orders:individual:abc")
    page.click("button:has-text('Search')")
    page.wait_for_selector("table.events")
    assert "orders.order.placed" in page.locator("table.events").inner_text()
    assert page.url.endswith("/audit")  # the search travelled in the body
    screenshot(page, "audit")
    page.click("nav >> text=Chain verification")
    assert page.locator("tr.bad").count() == 1 and "hash mismatch" in page.locator("tr.bad").inner_text()
    screenshot(page, "chains")
    page.close()


def test_keyboard_reaches_the_skip_link_first_and_language_switches(browser, portal, fakes):
    page = browser.new_page(viewport=LAPTOP)
    sign_in(page, portal, "t1", "alice", PASSWORD)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.click("button:has-text('Svenska')")
    page.wait_for_selector("html[lang=sv]")
    assert page.locator("h1").inner_text() == "Begäranden"
    screenshot(page, "requests-sv")
    page.close()


def test_a_privacy_officer_asks_for_a_resident_by_name_and_reads_its_records(browser, portal, fakes):
    """Issue 15: the customer's privacy officer opens an erasure for a resident known by name and birth
    date (nothing of her in the URL), then reads its own tenant's records of processing, in Swedish too."""
    fakes.add_account("t1", "pia", PASSWORD, roles=("privacy_officer",))
    page = browser.new_page(viewport=TABLET)
    errors = watch_console(page)
    sign_in(page, portal, "t1", "pia", PASSWORD)
    page.click("text=New request")
    page.check("input[name=type][value=erase]")
    page.fill("#subject-name", "Greta Lindqvist")
    page.fill("#birth-date", "1938-04-07")
    page.fill("#unit", "Avd 3")
    screenshot(page, "new-request-care-context")
    page.click("button:has-text('Submit request')")
    page.wait_for_selector("[data-status=awaiting_approval]")
    assert "Greta" not in page.url and "1938" not in page.url
    (sent,) = [c for c in fakes.calls if c["method"] == "POST" and c["path"] == "/gdpr/api/v1/requests"]
    assert json.loads(sent["body"])["subject"] == {
        "name": "Greta Lindqvist",
        "birth_date": "1938-04-07",
        "unit": "Avd 3",
    }
    page.click("button:has-text('Preview again')")
    page.wait_for_selector("text=approve on the new preview")
    assert len(fakes.previews_again) == 1

    page.click("text=Records of processing")
    page.wait_for_selector("#records-tenant")
    assert page.locator("#records-tenant").inner_text() == "t1"
    assert page.locator("#records-chooser").count() == 0
    individual = page.locator("table.records tr[data-service=orders][data-kind=individual] td.num")
    assert individual.inner_text() == "12"
    assert "DPA 2.0" in page.locator("#agreement").inner_text()
    assert fits_width(page)
    screenshot(page, "records-tablet")
    page.click("button[lang=sv]")
    page.wait_for_selector("text=Register över behandling")
    assert "Personuppgiftsbiträdesavtal" in page.locator("#agreement").inner_text()
    assert errors == []
    page.close()
