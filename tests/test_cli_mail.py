"""The mail commands of the real console entry: send-test-mail to a real SMTP server,
send-reset and send-verification (SQLite and MongoDB), audited, tokens never printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .conftest import free_port
from .helpers import audit_events, cli, create_user, one_line_error
from .mailbox import LINK, Outbox, SMTPServer, text


async def run(tmp_path: Path, *args: str, **kwargs: object):
    return await asyncio.to_thread(cli, tmp_path, *args, **kwargs)  # type: ignore[arg-type]


async def test_send_test_mail_reaches_a_real_smtp_server(tmp_path: Path):
    server = SMTPServer(free_port())
    await server.start()
    try:
        env = {"TORNADO_AUTH_MAIL__URL": f"smtp://127.0.0.1:{server.controller.port}"}
        result = await run(tmp_path, "send-test-mail", "--to", "ops@example.com", env=env)
    finally:
        await server.stop()
    assert result.returncode == 0, result.stderr
    assert "sent to ops@example.com" in result.stdout
    (message,) = server.collector.messages()
    assert message["To"] == "ops@example.com" and "test message" in message["Subject"]


async def test_send_test_mail_to_a_server_that_is_down_exits_1(tmp_path: Path):
    env = {
        "TORNADO_AUTH_MAIL__URL": f"smtp://127.0.0.1:{free_port()}",
        "TORNADO_AUTH_MAIL__RETRIES": "1",
        "TORNADO_AUTH_MAIL__RETRY_BACKOFF": "0.01",
    }
    result = await run(tmp_path, "send-test-mail", "--to", "ops@example.com", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ops@example.com" in result.stderr.splitlines()[-1]  # the log line names it too
    bad = await run(tmp_path, "send-test-mail", "--to", "nobody")
    assert "not a valid address" in one_line_error(bad, 1)


def test_send_reset_and_verification_write_links_and_are_audited(tmp_path: Path):
    assert create_user(tmp_path, "ann@example.com").returncode == 0
    for command, subject in (("send-reset", "Reset"), ("send-verification", "Confirm")):
        result = cli(tmp_path, command, "--email", "Ann@Example.com")
        assert result.returncode == 0, result.stderr
        message = Outbox(tmp_path / "var" / "outbox").last("ann@example.com", subject)
        link = LINK.search(text(message))
        assert link is not None
        token = link.group(0).rsplit("=", 1)[1]
        assert token not in result.stdout + result.stderr
    events = audit_events(tmp_path)
    sent = [(event, detail) for event, _, _, detail in events if event.endswith("_sent")]
    assert sent == [("password_reset_sent", {"by": "cli"}), ("verification_sent", {"by": "cli"})]
    assert "no user" in one_line_error(cli(tmp_path, "send-reset", "--email", "x@example.com"), 1)


def test_send_reset_on_mongodb(tmp_path: Path, mongo_users_url: str):
    env = {"TORNADO_AUTH_USERS__URL": mongo_users_url}
    assert create_user(tmp_path, "bob@example.com", env=env).returncode == 0
    result = cli(tmp_path, "send-reset", "--email", "bob@example.com", env=env)
    assert result.returncode == 0, result.stderr
    assert Outbox(tmp_path / "var" / "outbox").last("bob@example.com", "Reset")
