"""HTTP client for the services the portal sits on (auth, gdpr, audit), over their API.md contracts.

The standard library's urllib is enough for a handful of JSON and file calls and adds no
dependency.  Errors come back as ``UpstreamError`` carrying the upstream problem+json's
status, title, detail and field errors, or as ``UpstreamUnavailable`` when a service cannot
be reached; neither message holds a request body, and URLs are never logged with their query.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared import tracing

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """A service answered with an error status."""

    def __init__(self, service: str, status: int, title: str, detail: str, errors: list[dict] | None = None) -> None:
        super().__init__(f"{service} answered {status}")
        self.service = service
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class UpstreamUnavailable(Exception):
    """A service could not be reached (connection refused, timeout, malformed answer)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} is not reachable")
        self.service = service


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect from an API would carry the bearer token to wherever it points; refuse it.
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class Upstream:
    """One service's base URL (``http://127.0.0.1:8080/gdpr``) and how to call it."""

    def __init__(self, service: str, base_url: str, timeout: float = 10.0, forwarding_token: str | None = None) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.forwarding_token = forwarding_token

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.base_url + path
        params = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return url

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        accept: str = "application/json",
        forwarded_for: str | None = None,
    ) -> Reply:
        headers = {"Accept": accept}
        if forwarded_for and self.forwarding_token:
            # Auth throttles sign-ins per client address; without this every portal sign-in would
            # count against the portal's own address.  Auth believes the address only with the token
            # it shares with the portal (docs/auth.md "Brute-force protection").
            headers["X-Recept-Client-Address"] = forwarded_for
            headers["X-Recept-Forwarding-Token"] = self.forwarding_token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tracing.inject(headers)  # the W3C traceparent of this page's request goes on to the service
        req = urllib.request.Request(self.url(path, query), data=data, headers=headers, method=method)
        try:
            with _OPENER.open(req, timeout=self.timeout) as response:  # noqa: S310 - configured base URL
                return Reply(
                    response.status, response.headers.get_content_type(), response.read(), dict(response.headers)
                )
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            raise self._error(exc.code, raw) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            log.warning("%s unreachable on %s %s (%s)", self.service, method, path, type(exc).__name__)
            raise UpstreamUnavailable(self.service) from None

    def json(self, method: str, path: str, **kwargs) -> Any:
        reply = self.call(method, path, **kwargs)
        try:
            return reply.json()
        except ValueError:
            raise UpstreamUnavailable(self.service) from None

    def _error(self, status: int, raw: bytes) -> UpstreamError:
        title, detail, errors = f"HTTP {status}", "", []
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = None
        if isinstance(problem, dict):
            title = str(problem.get("title") or title)
            detail = str(problem.get("detail") or "")
            errors = [e for e in problem.get("errors") or [] if isinstance(e, dict)]
        return UpstreamError(self.service, status, title, detail, errors)

    def ping(self) -> None:
        """Raise when the service's /healthz does not answer 200 (the portal's readiness)."""
        reply = self.call("GET", "/healthz")
        if reply.status != 200:
            raise UpstreamUnavailable(self.service)
