"""Mail: the transports (a real SMTP server on a free port, files, the log), retries while the
server is down, templates an app replaces, and the mail.url setting."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from tornado_auth.mail import Mailer, SMTPTransport, transport_for_url
from tornado_auth.settings import SettingsError, load_settings

from .conftest import free_port
from .mailbox import Outbox, SMTPServer, text


def mailer(url: str, **options: float) -> Mailer:
    return Mailer(transport_for_url(url), "Auth <auth@example.com>", **options)  # type: ignore[arg-type]


async def test_smtp_delivers_text_and_html_to_a_real_server():
    server = SMTPServer(free_port(), login=("mailer", "s3cret/pw"))
    await server.start()
    try:
        url = f"smtp://mailer:s3cret%2Fpw@127.0.0.1:{server.controller.port}"
        sent = mailer(url).send(
            "ann@example.com", "reset", link="http://x/reset?token=abc", email="ann@example.com",
            valid_for="1 hour", public_url="http://x",
        )  # fmt: skip
        assert await sent is True
    finally:
        await server.stop()
    assert server.logins == ["mailer"]
    (message,) = server.collector.messages()
    assert message["To"] == "ann@example.com"
    assert message["From"] == "Auth <auth@example.com>"
    assert message["Subject"] == "Reset your password"
    assert "http://x/reset?token=abc" in text(message)
    html = message.get_body(("html",))
    assert html is not None and 'href="http://x/reset?token=abc"' in html.get_content()


async def test_a_server_that_is_down_and_comes_back_gets_the_message(caplog):
    port = free_port()  # nothing listens yet
    failed = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                failed.set()

    watch = Watch()
    logging.getLogger("tornado_auth.mail").addHandler(watch)
    try:
        outgoing = mailer(f"smtp://127.0.0.1:{port}", retries=8, backoff=0.05)
        task = outgoing.send("bob@example.com", "test", public_url="http://x")
        await failed.wait()  # the first attempt found no server
        server = SMTPServer(port)
        await server.start()
        try:
            assert await task is True
        finally:
            await server.stop()
    finally:
        logging.getLogger("tornado_auth.mail").removeHandler(watch)
    assert [m["To"] for m in server.collector.messages()] == ["bob@example.com"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("bob@example.com" in w and "retrying" in w for w in warnings)


async def test_a_message_never_sent_is_logged_with_its_recipient_and_raises_nothing(caplog):
    outgoing = mailer(f"smtp://127.0.0.1:{free_port()}", retries=2, backoff=0.01)
    assert await outgoing.send("carol@example.com", "test", public_url="http://x") is False
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("carol@example.com" in e and "not sent after 3 attempts" in e for e in errors)
    assert outgoing.failed == 1


async def test_starttls_required_refuses_a_server_without_tls(caplog):
    server = SMTPServer(free_port())
    await server.start()
    try:
        url = f"smtp://127.0.0.1:{server.controller.port}?starttls=require"
        assert await mailer(url, retries=0).send("dan@example.com", "test", public_url="x") is False
    finally:
        await server.stop()
    assert server.collector.envelopes == []


def test_smtp_urls_choose_tls_and_ports():
    plain = SMTPTransport("smtp://mail.example.com")
    assert (plain.port, plain.tls, plain.start_tls) == (587, False, None)
    assert SMTPTransport("smtp://h:25?starttls=require").start_tls is True
    assert SMTPTransport("smtp://h:25?starttls=off").start_tls is False
    secure = SMTPTransport("smtps://u:p@h")
    assert (secure.port, secure.tls, secure.start_tls) == (465, True, False)
    assert "p@" not in secure.name
    with pytest.raises(ValueError, match="starttls"):
        SMTPTransport("smtp://h?starttls=maybe")


async def test_file_transport_writes_one_eml_per_message(tmp_path: Path):
    outgoing = mailer(f"file:///{tmp_path}/box")
    for to in ("a@example.com", "b@example.com"):
        assert await outgoing.send(to, "test", public_url="http://x") is True
    box = Outbox(tmp_path / "box")
    assert [m["To"] for m in box.messages()] == ["a@example.com", "b@example.com"]
    assert not list((tmp_path / "box").glob(".*"))  # no partial file left


def test_each_message_has_its_own_message_id_and_leaves_the_apps_random_state_alone():
    outgoing = mailer("console://")
    state = random.getstate()
    ids = {outgoing.message("g@example.com", "test", public_url="http://x")["Message-ID"]
           for _ in range(50)}  # fmt: skip
    assert random.getstate() == state
    assert len(ids) == 50
    assert all(re.fullmatch(r"<[0-9]+\.[0-9]+\.[0-9a-f]{16}@example\.com>", i) for i in ids), ids


async def test_console_transport_logs_the_message(caplog):
    caplog.set_level(logging.INFO, "tornado_auth.mail")
    assert await mailer("console://").send("e@example.com", "test", public_url="http://x")
    assert any("tornado-auth: test message" in r.getMessage() for r in caplog.records)


async def test_an_app_replaces_a_mail_template(tmp_path: Path):
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "test.txt").write_text("Subject: Our own\n\nHello from {{ public_url }}\n")
    outgoing = mailer(f"file:///{tmp_path}/box")
    outgoing.use_templates(tmp_path)
    message: EmailMessage = outgoing.message("f@example.com", "test", public_url="http://app")
    assert message["Subject"] == "Our own"
    assert text(message).strip() == "Hello from http://app"


@pytest.mark.parametrize("url", ["http://mail", "smtp", "mailto:x@y"])
def test_an_unknown_mail_url_is_an_invalid_setting(url: str):
    with pytest.raises(SettingsError, match=r"^mail\.url: unsupported mail URL"):
        load_settings(environ={}, overrides={"mail.url": url})


def test_public_url_must_be_an_http_base():
    with pytest.raises(SettingsError, match=r"^server\.public_url"):
        load_settings(environ={}, overrides={"server.public_url": "example.com"})
    settings = load_settings(environ={}, overrides={"server.public_url": "https://a.example/"})
    assert settings["server.public_url"] == "https://a.example"
