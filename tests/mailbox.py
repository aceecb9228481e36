"""Mail the tests read back: the .eml files the file transport wrote, and a real SMTP server
(aiosmtpd) on a free port."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tornado_auth.services import Services

LINK = re.compile(r"https?://\S+\?token=[A-Za-z0-9_-]+")


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


class Outbox:
    """The messages a file:// transport wrote, oldest first."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        if not self.folder.is_dir():
            return []
        found = [parse(path.read_bytes()) for path in sorted(self.folder.glob("*.eml"))]
        return [m for m in found if to is None or m["To"] == to]

    def last(self, to: str, subject: str | None = None) -> EmailMessage:
        found = [m for m in self.messages(to) if subject is None or subject in m["Subject"]]
        assert found, f"no message to {to} ({subject}): {[m['Subject'] for m in self.messages()]}"
        return found[-1]

    def link(self, to: str, subject: str | None = None) -> str:
        match = LINK.search(text(self.last(to, subject)))
        assert match, "no link in the message"
        return match.group(0)


async def outbox(services: Services) -> Outbox:
    """Wait for the mail in flight, then the outbox it was written to."""
    await services.lifecycle.drain()
    return Outbox(services.mailer.transport.folder)  # type: ignore[attr-defined]


class Collector:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.arrived = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.loop.call_soon_threadsafe(self.arrived.set)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [parse(bytes(envelope.content or b"")) for envelope in self.envelopes]


class SMTPServer:
    """aiosmtpd on ``port`` (in its own thread), optionally asking for a login."""

    def __init__(self, port: int, login: tuple[str, str] | None = None) -> None:
        self.collector = Collector()
        self.logins: list[str] = []
        options: dict[str, Any] = {}
        if login is not None:
            options = {"authenticator": self._authenticate(login), "auth_require_tls": False}
        self.controller = Controller(
            self.collector, hostname="127.0.0.1", port=port, ready_timeout=10, **options
        )

    def _authenticate(self, login: tuple[str, str]) -> Any:
        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == login
            )
            if ok:
                self.logins.append(data.login.decode())
            return AuthResult(success=ok)

        return check

    async def start(self) -> None:
        await asyncio.to_thread(self.controller.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.controller.stop)
