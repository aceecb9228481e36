"""Where a dashboard request's time goes: py-spy samples one ``tornado-auth serve`` process (Redis
sessions, the defaults) while wrk rotates over many distinct signed-in sessions, and each sample
is put in the part of the request its innermost known frame belongs to.

    .venv/bin/python -m bench.profile [--quick] --json F
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import _common as common
from bench.http_load import wrk
from bench.peers import check, our_sessions

FULL = {"sessions": 20_000, "seconds": 20, "connections": 32}
QUICK = {"sessions": 2000, "seconds": 5, "connections": 32}
# The parts of a request. A sample belongs to the innermost frame of our code (bar the frames that
# start the server), named by where that code lives; but a sample whose innermost frame of ours is
# calling Tornado's response writing, or is outside the session, metrics and headers code and
# calling Tornado (the wrappers around Tornado's request handling), is Tornado's, as is a sample
# with none of our frames but Tornado's; the rest is asyncio's.
PARTS = [
    ("session: cookie found and verified", ("tornado_auth/cookies.py",)),
    ("session: store round trip and record decoding", ("tornado_auth/sessions/",)),
    ("session: request glue (resolve, commit, user)", ("tornado_auth/handlers/session_cookie.py",)),
    ("metrics and access log", ("tornado_auth/metrics.py", "tornado_auth/handlers/access_log.py")),
    ("security and no-store headers", ("tornado_auth/handlers/headers.py",)),
    ("the rest of our request code (prepare, dashboard, JSON)", ("tornado_auth/",)),
]  # fmt: skip
STARTING = ("tornado_auth/__main__.py", "tornado_auth/cli.py", "tornado_auth/server.py")
TORNADO = "Tornado: HTTP parsing, routing, response writing"
ASYNCIO = "asyncio: event loop, sockets, system calls"


def part_of(frames: list[str]) -> str:
    """The part of a request one sample's stack (outermost frame first) belongs to."""
    ours = [i for i, frame in enumerate(frames) if "tornado_auth/" in frame]
    ours = [i for i in ours if not any(start in frames[i] for start in STARTING)]
    if ours:
        innermost = ours[-1]
        callee = frames[innermost + 1] if innermost + 1 < len(frames) else ""
        part = next(part for part, places in PARTS if any(p in frames[innermost] for p in places))
        writing = callee.startswith(("RequestHandler.finish ", "RequestHandler.flush "))
        return TORNADO if writing or (part == PARTS[-1][0] and "tornado/" in callee) else part
    return TORNADO if any("tornado/" in frame for frame in frames) else ASYNCIO


def breakdown(raw: str) -> dict[str, int]:
    """Samples per part, from py-spy's raw (collapsed) output, for the event loop's thread (on
    asyncio's loop or uvloop's, whose own work in C shows as its caller, ``Runner.run``)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        if any("threading.py" in frame for frame in frames):
            continue  # the bcrypt pool's idle threads
        if "select (selectors.py" in frames[-1]:
            continue  # waiting for the network: idle
        counts[part_of(frames)] += int(samples)
    return dict(counts)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    run = secrets.token_hex(4)
    env = common.server_env({"SESSIONS__URL": common.REDIS_URL,
                             "SESSIONS__KEY_PREFIX": f"profile:{run}:",
                             "USERS__URL": f"{common.MONGO_URL}/ta_profile_{run}"})  # fmt: skip
    raw = common.OUT / f"profile-{run}.txt"
    async with common.serve(env, common.OUT / f"profile-{run}.log") as server:
        cookies = await our_sessions(env, args.sessions)
        url = f"{server.url}/api/dashboard"
        await check(url, cookies)
        # warm: every session once, as in bench.peers
        await wrk(url, args.connections, 60 + args.sessions // 200, cookies=str(cookies),
                  one_pass=True)  # fmt: skip
        async with common.quiet(server.process.pid) as load:
            sampler = await asyncio.create_subprocess_exec(
                spy, "record", "--rate", "250", "--duration", str(args.seconds - 2), "--format",
                "raw", "--output", str(raw), "--pid", str(server.process.pid),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            figures = await wrk(url, args.connections, args.seconds, threads=1,
                                cookies=str(cookies))  # fmt: skip
            if await sampler.wait() != 0:
                raise RuntimeError("py-spy failed (it needs ptrace: run as root)")
    counts = breakdown(raw.read_text())
    total = sum(counts.values())
    cpu_us = 1e6 * load["server_cores"] / figures["rps"]
    parts = {part: {"share": n / total, "us": cpu_us * n / total}
             for part, n in sorted(counts.items(), key=lambda item: -item[1])}  # fmt: skip
    for part, row in parts.items():
        print(f"  {row['share']:6.1%} {row['us']:6.1f} µs  {part}", flush=True)
    return {"command": common.command_line(), "params": vars(args), "samples": total,
            "rps": figures["rps"], "cpu_us_per_request": cpu_us, "load": load,
            "wrk": figures["command"], "parts": parts}  # fmt: skip


if __name__ == "__main__":
    common.cli(__doc__, main, FULL, QUICK)
