"""The wheel as a new user gets it: built from a clean copy, installed, served from nowhere.

The wheel is installed without its dependencies into a fresh virtualenv that borrows them from
the running one through a ``.pth`` line (a ``.pth`` file in that borrowed folder, such as the
editable install's finder, is not run, so the checkout stays out of reach). ``serve`` then runs
from an empty directory with development settings, and every page and static file must answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from .conftest import Client, free_port

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "tornado_auth", "templates", "static")


def outside_the_checkout() -> dict[str, str]:
    """The environment without anything that would put the checkout on a Python path."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TORNADO_AUTH_", "PYTHON", "VIRTUAL_ENV"))
    }


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=outside_the_checkout(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding the wheel built from a copy of the repository's tracked sources."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(path, source / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", source)
    (wheel,) = (root / "dist").glob("tornado_auth-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "-q", "--no-deps", "--no-index", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.as_posix().strip()) / "dependencies.pth").write_text("\n".join(borrowed) + "\n")
    return venv


LIST_PACKAGE = """
import json, pathlib, tornado_auth
root = pathlib.Path(tornado_auth.__file__).parent
files = [str(f.relative_to(root)) for f in root.rglob("*") if "__pycache__" not in f.parts]
print(json.dumps([str(root), files]))
"""


def test_the_wheel_holds_the_templates_static_files_and_py_typed(installed, tmp_path):
    root, files = json.loads(run(installed / "bin" / "python", "-c", LIST_PACKAGE, cwd=tmp_path))
    assert installed in Path(root).parents  # the installed copy, not the checkout
    for folder in ("templates", "static"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file():
                assert f"{folder}/{path.relative_to(REPO / folder)}" in files
    assert "py.typed" in files


async def read_until(stream: asyncio.StreamReader, text: str) -> list[str]:
    lines = []
    while text not in (lines[-1] if lines else ""):
        line = (await asyncio.wait_for(stream.readline(), 60)).decode()
        assert line, f"serve ended before {text!r}: {lines}"
        lines.append(line)
    return lines


async def test_serve_from_an_empty_directory_answers_every_page_and_asset(installed, tmp_path):
    port = free_port()
    environment = outside_the_checkout()
    environment["TORNADO_AUTH_USERS__BCRYPT_ROUNDS"] = "4"  # the demo users, quickly
    process = await asyncio.create_subprocess_exec(
        installed / "bin" / "tornado-auth",
        *("serve", "--port", str(port)),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines = await read_until(process.stdout, "listening on")
        admin = next(line for line in lines if line.startswith("demo admin:"))
        email, password = re.findall(r"(\S+@\S+)\s+password: (\S+)", admin)[0]
        base = f"http://127.0.0.1:{port}"
        health = await AsyncHTTPClient().fetch(base + "/healthz")
        assert json.loads(health.body) == {"status": "ok"}

        visitor = Client(base)
        for path, status, where in [
            ("/login", 200, None),
            ("/register", 200, None),
            ("/forgot", 200, None),
            ("/", 302, "/dashboard"),
            ("/dashboard", 302, "/login?next=/dashboard"),
            ("/sessions", 302, "/login?next=/sessions"),
            ("/admin", 302, "/login?next=/admin"),
        ]:
            response = await visitor.get(path)
            assert response.code == status, path
            assert response.headers.get("Location") == where, path
        missing = await visitor.get("/no-such-page")
        assert missing.code == 404 and b"<html" in missing.body.lower()

        signed_in = Client(base)
        assert (await signed_in.login(email, password)).code == 200
        for path in ("/dashboard", "/sessions", "/admin", "/account", "/account/mfa"):
            page = await signed_in.get(path)
            assert page.code == 200, path
            assert email.encode() in page.body or path in ("/sessions", "/account/mfa"), path
            assert b"/static/css/app.css" in page.body

        # the mail templates ship too: a reset link lands in the default outbox, var/outbox
        assert (await visitor.post("/api/password/forgot", {"email": email})).code == 200
        assert process.stderr is not None
        sent = await read_until(process.stderr, "sent to")  # the mail task logs each message
        assert "reset" in sent[-1]
        (message,) = (tmp_path / "var" / "outbox").glob("*.eml")
        assert "/reset?token=" in message.read_text()

        for path in (REPO / "static").rglob("*"):
            if path.is_file():
                asset = await visitor.get(f"/static/{path.relative_to(REPO / 'static')}")
                assert asset.code == 200, path
                assert asset.body == path.read_bytes(), path
        assert (tmp_path / "var" / "users.db").exists()  # SQLite under ./var
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
    assert "Traceback" not in (await process.stderr.read()).decode()
