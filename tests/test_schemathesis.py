"""Schemathesis against a live ``tornado-auth serve`` (SQLite; Redis + MongoDB): every operation
of the OpenAPI document (valid and invalid input), signed in as a user and as an admin, then
linked operations (register, sign in, list and end sessions). No server error, no response the
document does not allow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Store, free_port, require_service

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))  # per operation, role and store
STEPS = int(os.environ.get("SCHEMATHESIS_STEPS", "20"))  # stateful scenarios per store
QUICK = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    # A live server keeps its state: replaying a case to shrink it would not see the same answers.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
DEMO = re.compile(rb"demo (\w+): (\S+)  password: (\S+)")


class Served:
    """``tornado-auth serve`` in a child process, with its demo admin and user."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")},
            "TORNADO_AUTH_SESSIONS__URL": store.session_url(),
            "TORNADO_AUTH_SESSIONS__KEY_PREFIX": store.prefix,
            "TORNADO_AUTH_USERS__URL": store.user_url(),
            "TORNADO_AUTH_USERS__BCRYPT_ROUNDS": "4",
            "TORNADO_AUTH_SECRETS__SECRET_FILE": str(tmp_path / "secret"),
            "TORNADO_AUTH_MAIL__URL": f"file:///{tmp_path}/outbox",
            "TORNADO_AUTH_LOGGING__ACCESS_LOG": "false",
            # Wrong current passwords must not lock the demo users out of the next operations.
            "TORNADO_AUTH_THROTTLE__ACCOUNT_IP_FAILURES": "1000000000",
            "TORNADO_AUTH_THROTTLE__IP_FAILURES": "1000000000",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tornado_auth", "serve", "--port", str(self.port)],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
        )
        self.passwords: dict[str, tuple[str, str]] = {}
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.process.stdout:  # the demo users' passwords, then "listening"
            if match := DEMO.match(line):
                role, email, password = (part.decode() for part in match.groups())
                self.passwords[role] = (email, password)
            if b"listening" in line or time.monotonic() > deadline:
                break
        assert set(self.passwords) == {"admin", "user"}, "the server did not start"

    def cookie(self, role: str) -> dict[str, str]:
        """A fresh session of the demo user with that role, as a cookie jar."""
        email, password = self.passwords[role]
        session = requests.Session()
        reply = session.post(
            f"{self.base_url}/api/login", json={"email": email, "password": password}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        return session.cookies.get_dict()

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(30) == 0


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The server on SQLite, and on Redis sessions with MongoDB users."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    if request.param == "redis":
        require_service("redis")
        require_service("mongodb")
    store = Store(request.param, tmp_path)
    server = Served(tmp_path, store)
    try:
        yield server
    finally:
        server.stop()
        asyncio.run(store.cleanup())


def without_session_cookie(case: Any) -> None:
    """Schemathesis fills the sessionCookie scheme with made-up values; the test sends real ones."""
    if case.cookies:
        case.cookies.pop("session", None)


def load_schema(server: Served) -> Any:
    return schemathesis.openapi.from_url(f"{server.base_url}/api/openapi.json")


@pytest.mark.parametrize("role", ["user", "admin"])
def test_every_operation_answers_as_documented(served: Served, role: str):
    schema = load_schema(served)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25
    for operation in operations:

        @QUICK
        @given(case=operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE))
        def check(case: Any, cookies: dict[str, str]) -> None:
            without_session_cookie(case)
            case.call_and_validate(base_url=served.base_url, cookies=cookies, checks=CHECKS)

        check(cookies=served.cookie(role))  # a new session: a case may have ended the last one


def test_linked_operations_answer_as_documented(served: Served):
    """Register, sign in, list the sessions, name and end them: one cookie jar per scenario."""
    schema = load_schema(served)
    base_url = served.base_url
    failures: list[str] = []

    class Links(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.browser = requests.Session()

        def call(self, case: Any, **kwargs: Any) -> Any:
            without_session_cookie(case)  # the jar's, from the register or login step
            return case.call(base_url=base_url, session=self.browser, **kwargs)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:
                failures.append(f"{case.method} {case.path}: {failure}")
                raise

    # Not derandomized, and a scenario Hypothesis cannot draw again the same way ends the run
    # (as in Schemathesis's own runner): a live server changes between scenarios (an address
    # registered by one is taken for the next), which Hypothesis takes for a flaky strategy.
    with contextlib.suppress(FlakyStrategyDefinition):
        Links.run(
            settings=settings(QUICK, max_examples=STEPS, stateful_step_count=6, derandomize=False)
        )
    assert failures == []
