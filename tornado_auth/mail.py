"""Outgoing mail: a transport chosen by ``mail.url``, messages from replaceable templates, and
delivery in the background with retries, so no request waits for (or fails with) a mail server.

``smtp://user:pass@host:587`` (STARTTLS when offered; ``?starttls=require`` or ``?starttls=off``),
``smtps://user:pass@host:465``, ``file:///var/outbox`` (one ``.eml`` per message; relative, like
``sqlite:///``; ``file:////abs`` for an absolute folder) and ``console://`` (the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib

from .redact import redact_url
from .resources import TEMPLATES
from .templates import LayeredLoader

log = logging.getLogger("tornado_auth.mail")
SMTP_TIMEOUT = 20.0


class Transport(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SMTPTransport:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.tls else 587)
        self.username = urllib.parse.unquote(parts.username) if parts.username else None
        self.password = urllib.parse.unquote(parts.password) if parts.password else None
        option = dict(urllib.parse.parse_qsl(parts.query)).get("starttls", "auto").lower()
        choices: dict[str, bool | None] = {"auto": None, "require": True, "off": False}
        if option not in choices:
            raise ValueError("mail.url: starttls must be auto, require or off")
        self.start_tls = False if self.tls else choices[option]
        self.name = redact_url(url)

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls,
            start_tls=self.start_tls,
            timeout=SMTP_TIMEOUT,
        )


class FileTransport:
    """Each message as an ``.eml`` file, written whole (a reader never sees half of one)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._write, message.as_bytes())

    def _write(self, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{secrets.token_hex(4)}.eml"
        partial = self.folder / f".{name}.tmp"
        partial.write_bytes(data)
        os.replace(partial, self.folder / name)


class ConsoleTransport:
    async def send(self, message: EmailMessage) -> None:
        text = message.get_body(("plain",))
        content = text.get_content() if text is not None else ""
        log.info("mail to %s: %s\n%s", message["To"], message["Subject"], content)


def transport_for_url(url: str) -> Transport:
    if url.startswith(("smtp://", "smtps://")):
        return SMTPTransport(url)
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        return FileTransport(path[1:] if path.startswith("/") else path)
    if url.startswith("console://"):
        return ConsoleTransport()
    raise ValueError(f"mail.url: unsupported URL {redact_url(url)!r}")


def message_id(domain: str) -> str:
    """A unique Message-ID. Not ``email.utils.make_msgid``: it draws on the ``random`` module's
    shared state, which belongs to the app this library runs in."""
    return f"<{time.time_ns()}.{os.getpid()}.{secrets.token_hex(8)}@{domain}>"


class Mailer:
    """Renders ``mail/NAME.txt`` (its first line ``Subject: ...``) and ``mail/NAME.html`` and
    sends them in the background: a failure is retried ``retries`` times, the wait doubling from
    ``backoff``, and every message ends logged as sent or as not sent, with its recipient."""

    def __init__(
        self,
        transport: Transport,
        sender: str,
        retries: int = 5,
        backoff: float = 2.0,
        template_roots: Sequence[Path] = (),
    ) -> None:
        self.transport = transport
        self.sender = sender
        self.retries = retries
        self.backoff = backoff
        self.templates = LayeredLoader([*template_roots, TEMPLATES])
        self._pending: set[asyncio.Task[bool]] = set()
        self.sent = 0
        self.failed = 0

    def use_templates(self, folder: str | Path) -> None:
        """Let an app's ``mail/`` templates replace ours by name."""
        self.templates = LayeredLoader([Path(folder), TEMPLATES])

    def message(self, to: str, template: str, **values: Any) -> EmailMessage:
        text = self.templates.load(f"mail/{template}.txt").generate(**values).decode()
        first, _, body = text.lstrip().partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError(f"mail/{template}.txt must start with a Subject: line")
        message = EmailMessage()
        message["Subject"] = first.removeprefix("Subject:").strip()
        message["From"] = self.sender
        message["To"] = to
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_id(self.sender.rpartition("@")[2].strip("> "))
        message.set_content(body.lstrip("\n"))
        try:
            html = self.templates.load(f"mail/{template}.html").generate(**values).decode()
        except FileNotFoundError:
            html = None
        if html:
            message.add_alternative(html, subtype="html")
        return message

    def send(self, to: str, template: str, **values: Any) -> asyncio.Task[bool]:
        """Queue a message; the task answers whether it was sent (never raises)."""
        message = self.message(to, template, **values)
        task = asyncio.ensure_future(self._deliver(message, template))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _deliver(self, message: EmailMessage, template: str) -> bool:
        to = message["To"]
        attempt = 0
        while True:
            try:
                await self.transport.send(message)
            except asyncio.CancelledError:
                log.error("mail %s to %s not sent: cancelled at shutdown", template, to)
                self.failed += 1
                raise
            except Exception as error:
                if attempt >= self.retries:
                    log.error(
                        "mail %s to %s not sent after %d attempts: %s",
                        template, to, attempt + 1, error,
                    )  # fmt: skip
                    self.failed += 1
                    return False
                wait = self.backoff * 2**attempt
                log.warning(
                    "mail %s to %s failed (attempt %d), retrying in %.1fs: %s",
                    template, to, attempt + 1, wait, error,
                )  # fmt: skip
                attempt += 1
                await asyncio.sleep(wait)
                continue
            log.info("mail %s sent to %s", template, to)
            self.sent += 1
            return True

    async def drain(self) -> None:
        """Wait until every queued message is sent or given up."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self, grace: float = 10.0) -> None:
        """Give queued messages ``grace`` seconds, then cancel the rest (each one logged)."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


def mailer_for_settings(settings: Any) -> Mailer:
    return Mailer(
        transport_for_url(settings["mail.url"]),
        settings["mail.from"],
        retries=settings["mail.retries"],
        backoff=settings["mail.retry_backoff"],
    )
