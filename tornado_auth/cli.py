"""``tornado-auth``: serve and the admin commands. Exit 0 ok, 2 bad usage or settings, 1 failure."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable

from .accounts import CLI, LastAdmin
from .errors import StoreUnavailable
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tornado-auth", description=__doc__)
    parser.add_argument("--config", help="settings YAML file (default: built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--processes", type=int, help="worker processes, 0 for one per core")

    create = commands.add_parser("create-user", help="add a user (password from a prompt)")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=ROLES, default="user")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )

    role = commands.add_parser("set-role", help="change a user's role (ends their sessions)")
    role.add_argument("--email", required=True)
    role.add_argument("--role", choices=ROLES, required=True)

    for name, text in (
        ("disable", "disable a user and end their sessions"),
        ("enable", "enable a user"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--email", required=True)

    commands.add_parser("list-users", help="print every user")
    revoke = commands.add_parser("revoke-sessions", help="end every session of a user")
    revoke.add_argument("--email", required=True)
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
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


async def create_user(services: Services, args: argparse.Namespace) -> None:
    problem = email_problem(args.email) or name_problem(args.name)
    password = _read_password(args.password_stdin)
    problem = problem or password_problem(password)
    if problem:
        raise CommandError(problem)
    try:
        user = await services.accounts.register(args.email, args.name, password, CLI, args.role)
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


async def list_users(services: Services, args: argparse.Namespace) -> None:
    offset = 0
    while True:
        users, total = await services.users.page(offset, 500)
        for user in users:
            state = "disabled" if user.disabled else "active"
            fields = (user.id, user.email, user.role, state, user.name)
            print("\t".join(shown(field) for field in fields))
        offset += len(users)
        if not users or offset >= total:
            return


async def revoke_sessions(services: Services, args: argparse.Namespace) -> None:
    user = await _user(services, args.email)
    count = await services.accounts.end_sessions(user.id, user.email, CLI)
    print(f"revoked {count} session(s) of {shown(args.email)}")


COMMANDS: dict[str, Callable[[Services, argparse.Namespace], Awaitable[None]]] = {
    "create-user": create_user,
    "set-role": set_role,
    "disable": set_disabled,
    "enable": set_disabled,
    "list-users": list_users,
    "revoke-sessions": revoke_sessions,
}


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    services = await start_services(settings)
    try:
        await COMMANDS[args.command](services, args)
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = {}
        if args.command == "serve":
            overrides = {"server.host": args.host, "server.port": args.port}
            overrides["server.processes"] = args.processes
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as error:
        print(f"tornado-auth: invalid setting {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings["logging.level"], format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        if args.command == "serve":
            from .server import serve

            serve(settings)
        else:
            asyncio.run(_run(settings, args))
    except SettingsError as error:
        print(f"tornado-auth: invalid setting {error}", file=sys.stderr)
        return 2
    except (CommandError, StoreUnavailable, OSError) as error:
        print(f"tornado-auth: {shown(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
