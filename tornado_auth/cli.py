"""The ``tornado-auth`` command: serve, and the admin commands. Exit 0 ok, 2 bad usage or
settings, 1 failure, 130 interrupted."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable

from . import __version__
from .accounts import CLI, LastAdmin
from .audit import AuditEvent
from .errors import StoreUnavailable
from .logs import configure_logging
from .redact import redact_url
from .services import Services, start_services
from .settings import Settings, SettingsError, load_settings
from .users import ROLES, EmailTaken, User, email_problem, name_problem, normalize_email
from .users.passwords import password_problem


class CommandError(Exception):
    """A runtime failure to report in one line with exit status 1."""


def shown(text: object) -> str:
    """Text a user chose, safe to print on the operator's terminal."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    # Every character Python does not count as printable (ESC, CR, tab, other C0 and C1 controls,
    # bidi overrides, zero-width and other format characters, line separators, unusual spaces)
    # is written as its escape (\x1b, \r, \u202e); "\\" is doubled so no text passes for one.
    return "".join(
        character
        if character.isprintable() and character != "\\"
        else character.encode("unicode_escape").decode("ascii")
        for character in text
    )


DESCRIPTION = (
    "Serve tornado-auth, or manage its users from the command line. Settings come from the "
    "built-in defaults, a YAML file (--config) and TORNADO_AUTH_* environment variables."
)
EPILOG = (
    "--config may come before or after the command. "
    "Exit status: 0 success, 2 bad usage or settings, 1 runtime failure, 130 interrupted."
)


def _parser() -> argparse.ArgumentParser:
    # --config is accepted before and after the command: the sub-commands take it too, with a
    # suppressed default so that a value given before the command is not overwritten.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="settings YAML file (default: TORNADO_AUTH_CONFIG, else the built-in defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="tornado-auth", description=DESCRIPTION, epilog=EPILOG, parents=[config]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[config])

    def email(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--email", required=True, metavar="E", help="the user's email address")

    serve = command("serve", "Run the HTTP server.")
    serve.add_argument("--host", metavar="H", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, metavar="P", help="port to listen on (server.port)")
    serve.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="worker processes, 0 for one per core (server.processes)",
    )

    create = command(
        "create-user", "Add a user; the password is asked twice at a prompt, or read from stdin."
    )
    email(create)
    create.add_argument("--name", required=True, metavar="N", help="the user's display name")
    create.add_argument(
        "--role", choices=ROLES, default="user", help="the user's role (default: user)"
    )
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of a prompt",
    )

    role = command("set-role", "Change a user's role; their sessions end.")
    email(role)
    role.add_argument("--role", choices=ROLES, required=True, help="the new role")

    email(command("disable", "Disable a user; their sessions end."))
    email(command("enable", "Enable a disabled user."))

    listing = command("list-users", "Print every user, one a line under a header.")
    listing.add_argument("--json", action="store_true", help="print a JSON array of users instead")
    email(command("revoke-sessions", "End every session of a user."))
    email(command("reset-mfa", "Remove a user's authenticator app and recovery codes."))

    email(command("send-reset", "Email a user a password reset link."))
    email(command("send-verification", "Email a user a new link to verify their address."))
    test_mail = command("send-test-mail", "Send a test message to check the mail settings.")
    test_mail.add_argument("--to", required=True, metavar="ADDRESS", help="where to send it")
    return parser


class NoTerminal(Exception):
    """A password prompt without a terminal to ask on: bad usage, exit status 2."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise NoTerminal("no terminal to ask for the password; pipe it in with --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CommandError("passwords do not match")
    return first


async def _user(services: Services, email: str) -> User:
    user = await services.users.by_email(normalize_email(email))
    if user is None:
        raise CommandError(f"no user with email {email}")
    return user


async def _change(services: Services, email: str, role: str | None, disabled: bool | None) -> User:
    """The change an admin makes in the web UI, audited as done from the command line."""
    try:
        return await services.accounts.change_user(
            await _user(services, email), role, disabled, CLI
        )
    except LastAdmin as error:
        raise CommandError(str(error)) from None


def _new_password(args: argparse.Namespace) -> str:
    """The new user's password, asked before any store is opened: a prompt answers Ctrl-C at
    once (inside the event loop the first one would wait for the prompt to return)."""
    problem = email_problem(args.email) or name_problem(args.name)
    if problem:
        raise CommandError(problem)
    password = _read_password(args.password_stdin)
    problem = password_problem(password)
    if problem:
        raise CommandError(problem)
    return password


async def create_user(services: Services, args: argparse.Namespace) -> None:
    try:
        user = await services.accounts.register(
            args.email, args.name, args.password, CLI, args.role
        )
    except EmailTaken:
        raise CommandError(f"email already registered: {args.email}") from None
    print(f"created {user.role} {shown(user.email)} ({user.id})")


async def set_role(services: Services, args: argparse.Namespace) -> None:
    user = await _change(services, args.email, args.role, None)
    print(f"{shown(user.email)} is now {user.role}; their sessions were ended")


async def set_disabled(services: Services, args: argparse.Namespace) -> None:
    disabled = args.command == "disable"
    user = await _change(services, args.email, None, disabled)
    done = "disabled; their sessions were ended" if disabled else "enabled"
    print(f"{shown(user.email)} {done}")


HEADER = ("ID", "EMAIL", "ROLE", "STATE", "NAME")


async def list_users(services: Services, args: argparse.Namespace) -> None:
    """Tab-separated rows under a header, or with --json one JSON array (ASCII only: whatever
    a user chose is escaped, so it cannot drive the terminal)."""
    offset = 0
    while True:
        users, total = await services.users.page(offset, 500)
        if offset == 0:  # the header once the store answered
            print("[" if args.json else "\t".join(HEADER), end="" if args.json else "\n")
        for n, user in enumerate(users):
            if args.json:
                print(("," if offset or n else "") + "\n  " + json.dumps(user.public()), end="")
            else:
                state = "disabled" if user.disabled else "active"
                fields = (user.id, user.email, user.role, state, user.name)
                print("\t".join(shown(field) for field in fields))
        offset += len(users)
        if not users or offset >= total:
            break
    if args.json:
        print("\n]" if offset else "]")


async def revoke_sessions(services: Services, args: argparse.Namespace) -> None:
    user = await _user(services, args.email)
    count = await services.accounts.end_sessions(user.id, user.email, CLI)
    print(f"revoked {count} session(s) of {shown(args.email)}")


async def reset_mfa(services: Services, args: argparse.Namespace) -> None:
    """An admin's reset from the command line: the way back for an admin who lost their app
    while ``security.require_mfa_for_admins`` keeps the admin pages closed."""
    user = await _user(services, args.email)
    if await services.mfa.reset(user, CLI):
        await _delivered(services, shown(user.email))
        print(f"reset the second factors of {shown(args.email)}; their sessions ended")
    else:
        print(f"{shown(args.email)} has no second factor to reset")


async def send_link(services: Services, args: argparse.Namespace) -> None:
    """The links an admin sends from the web UI, audited as sent from the command line."""
    user = await _user(services, args.email)
    lifecycle = services.lifecycle
    if args.command == "send-reset":
        await lifecycle.send_reset(user, CLI)
    else:
        await lifecycle.send_verification(user, CLI)
    await _delivered(services, shown(user.email))


async def send_test_mail(services: Services, args: argparse.Namespace) -> None:
    problem = email_problem(args.to)
    if problem:
        raise CommandError(problem)
    services.mailer.send(args.to.strip(), "test", public_url=services.settings["server.public_url"])
    await services.accounts.record(AuditEvent.TEST_MAIL_SENT, CLI, None, email=args.to.strip())
    await _delivered(services, shown(args.to))


async def _delivered(services: Services, to: str) -> None:
    """Wait for the message (its retries included): exit 1 if it could not be sent."""
    failed = services.mailer.failed
    await services.lifecycle.drain()
    if services.mailer.failed > failed:
        raise CommandError(f"the message to {to} could not be sent: see the log above")
    print(f"sent to {to} through {redact_url(services.settings['mail.url'])}")


COMMANDS: dict[str, Callable[[Services, argparse.Namespace], Awaitable[None]]] = {
    "create-user": create_user,
    "set-role": set_role,
    "disable": set_disabled,
    "enable": set_disabled,
    "list-users": list_users,
    "revoke-sessions": revoke_sessions,
    "reset-mfa": reset_mfa,
    "send-reset": send_link,
    "send-verification": send_link,
    "send-test-mail": send_test_mail,
}


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    services = await start_services(settings)
    try:
        await COMMANDS[args.command](services, args)
    finally:
        await services.close()


def _briefly(error: StoreUnavailable, limit: int = 200) -> str:
    """A store's failure in one line of reasonable length (drivers explain at great length)."""
    text = str(error)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(message: object, status: int) -> int:
    print(f"tornado-auth: {shown(message)}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = {}
        if args.command == "serve":
            overrides = {"server.host": args.host, "server.port": args.port}
            overrides["server.processes"] = args.processes
        settings = load_settings(getattr(args, "config", None), overrides=overrides)
        if args.command == "create-user":
            args.password = _new_password(args)
    except SettingsError as error:
        return _fail(f"invalid setting {error}", 2)
    except NoTerminal as error:
        return _fail(f"{args.command}: {error}", 2)
    except CommandError as error:
        return _fail(error, 1)
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)  # end the prompt's line
        return 130
    configure_logging(settings["logging.level"], settings["logging.format"])
    try:
        if args.command == "serve":
            from .server import serve

            serve(settings)
        else:
            asyncio.run(_run(settings, args))
    except SettingsError as error:
        return _fail(f"invalid setting {error}", 2)
    except StoreUnavailable as error:
        return _fail(_briefly(error), 1)
    except (CommandError, OSError) as error:
        return _fail(error, 1)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
