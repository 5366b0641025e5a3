"""Helpers of the shared-library tests."""

from __future__ import annotations


def assert_no_leak(exc_info, *secrets) -> None:
    text = str(exc_info.value) + repr(exc_info.value) + repr(getattr(exc_info.value, "errors", ""))
    for secret in secrets:
        assert secret not in text
