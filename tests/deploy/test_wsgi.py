"""services/wsgi.py behind the proxy: X-Forwarded-* are trusted only when RECEPT_BEHIND_PROXY says so.

The real gunicorn entry module is run (as gunicorn imports it) for the compliance portal, the
one service whose pages must work under the proxy's /portal/ prefix.
"""

from __future__ import annotations

import runpy

import pytest
from flask import request

from deploy.contract import PROXY_VARIABLE
from shared.config import ConfigError
from shared.crypto import Keyring
from tests.deploy.conftest import ROOT

PROXY = "10.0.0.2"  # the nginx container, as the api sees it


@pytest.fixture
def wsgi_app(monkeypatch, tmp_path):
    """``wsgi_app(behind_proxy)``: the app gunicorn would serve for RECEPT_SERVICE=portal."""
    apps = []

    def build(behind_proxy: str | None):
        monkeypatch.setenv("RECEPT_SERVICE", "portal")
        monkeypatch.setenv("RECEPT_PORTAL_DATABASE_URL", f"sqlite:///{tmp_path / 'portal.db'}")
        monkeypatch.setenv("RECEPT_PORTAL_KEYRING", Keyring.generate().to_json())
        if behind_proxy is None:
            monkeypatch.delenv(PROXY_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(PROXY_VARIABLE, behind_proxy)
        # The JSON log handler on the root logger would outlive the test.
        monkeypatch.setattr("shared.logs.configure_logging", lambda *args, **kwargs: None)
        app = runpy.run_path(str(ROOT / "services" / "wsgi.py"))["app"]
        app.add_url_rule("/probe/address", "probe_address", lambda: request.remote_addr or "")
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["recept"].db.dispose()


def _get(app, path: str, headers: dict | None = None):
    with app.test_client() as client:
        return client.get(path, headers=headers or {}, environ_base={"REMOTE_ADDR": PROXY})


def test_behind_the_proxy_the_portal_links_redirects_and_scopes_its_cookie_under_its_prefix(wsgi_app):
    """The proxy strips /portal and sends X-Forwarded-Prefix; the browser must stay under /portal/."""
    app = wsgi_app("true")
    forwarded = {"X-Forwarded-Prefix": "/portal", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http"}
    redirected = _get(app, "/requests", forwarded)
    assert redirected.status_code == 302
    assert redirected.headers["Location"] == "/portal/login"

    login = _get(app, "/login", forwarded)
    page = login.get_data(as_text=True)
    assert login.status_code == 200
    assert 'action="/portal/login"' in page
    assert 'href="/portal/assets/portal.css"' in page and 'action="/portal/language"' in page
    assert 'href="/login' not in page and 'action="/login' not in page and 'href="/assets' not in page
    cookies = login.headers.getlist("Set-Cookie")
    assert cookies and all("Path=/portal/" in cookie for cookie in cookies)


def test_without_the_setting_forwarded_headers_are_ignored(wsgi_app):
    """Reached directly, a client could otherwise pick its own prefix or address."""
    app = wsgi_app(None)
    forwarded = {"X-Forwarded-Prefix": "/elsewhere", "X-Forwarded-For": "203.0.113.7"}
    assert _get(app, "/requests", forwarded).headers["Location"] == "/login"
    assert _get(app, "/probe/address", forwarded).get_data(as_text=True) == PROXY


def test_only_the_last_hop_of_x_forwarded_for_is_trusted(wsgi_app):
    """Auth blocks brute force per client address (R16): a client-supplied first entry must not count."""
    app = wsgi_app("true")
    forged = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    assert _get(app, "/probe/address", forged).get_data(as_text=True) == "203.0.113.7"
    assert _get(app, "/probe/address").get_data(as_text=True) == PROXY


def test_a_misspelt_value_stops_the_process_instead_of_silently_trusting_nothing(wsgi_app):
    with pytest.raises(ConfigError, match=PROXY_VARIABLE):
        wsgi_app("ture")
