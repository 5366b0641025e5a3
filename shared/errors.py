"""Typed domain errors; shared.http maps each to an RFC 9457 problem+json response.

Messages are shown to API callers and may be logged: they must never hold personal data.
"""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    title = "Bad request"
    type_suffix = "bad-request"

    def __init__(
        self, detail: str, *, errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


class Invalid(DomainError):
    """Input that fails validation; ``errors`` lists ``{"field", "message"}`` items."""

    status = 422
    title = "Invalid input"
    type_suffix = "invalid"


class PayloadTooLarge(DomainError):
    status = 413
    title = "Request Entity Too Large"
    type_suffix = "payload-too-large"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"
    type_suffix = "unsupported-media-type"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"
    type_suffix = "unauthorized"


class AccessDenied(DomainError):
    status = 403
    title = "Forbidden"
    type_suffix = "forbidden"


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type_suffix = "not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    type_suffix = "conflict"


class Gone(DomainError):
    status = 410
    title = "Gone"
    type_suffix = "gone"


class Unavailable(DomainError):
    """A dependency (directory, broker, database) cannot be reached right now."""

    status = 503
    title = "Service unavailable"
    type_suffix = "unavailable"


class DamagedRecord(DomainError):
    """A stored value cannot be read back (a ciphertext that fails authentication, a plaintext
    of the wrong type): the data is damaged, not the request and not the code.

    409: the resource is in a state that does not allow the operation; the detail names the
    field (never its value) so an operator can repair or restore it.  A bug (a TypeError, a
    KeyError) stays the plain 500.
    """

    status = 409
    title = "Damaged record"
    type_suffix = "damaged-record"


class TooManyRequests(DomainError):
    """A caller (an address, a client) asked too often; ``headers`` carries Retry-After."""

    status = 429
    title = "Too many requests"
    type_suffix = "too-many-requests"
