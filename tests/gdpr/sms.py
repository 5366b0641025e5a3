"""A fake SMS sender for the tests (setting SMS_SENDER=tests.gdpr.sms:create): it records what it is
given instead of calling an SMS gateway, which is not what the tests exercise."""

from __future__ import annotations

import threading

SENT: list[tuple[str, str]] = []  # (number, text), every sink's, in order
_LOCK = threading.Lock()


class Sink:
    def send(self, number: str, text: str) -> None:
        with _LOCK:
            SENT.append((number, text))


def create(config) -> Sink:
    return Sink()
