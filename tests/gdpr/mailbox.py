"""A real SMTP server (aiosmtpd) in the test process, for the gdpr service's codes and notices."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Mailbox:
    port: int = 0
    messages: list = field(default_factory=list)  # email.message.EmailMessage, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, to: str | None = None) -> list[str]:
        with self.lock:
            found = [m for m in self.messages if to is None or to in m["To"]]
        return [m.get_body(preferencelist=("plain",)).get_content() for m in found]

    def last_code(self, to: str) -> str:
        return re.findall(r"\b(\d{6})\b", self.bodies(to)[-1])[0]


@contextmanager
def mailbox():
    from aiosmtpd.controller import Controller

    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with box.lock:
                box.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 Message accepted"

    # aiosmtpd connects to its own port to see that it is up, so it cannot take port 0: pick a free one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        box.port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
