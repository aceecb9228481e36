"""Run every benchmark, then write the figures and RESULTS.md.

    .venv/bin/python -m bench.run [--quick]      (``make bench`` runs it)

The benchmarks get a private redis-server and MongoDB-compatible server (tools/services.py) on
free loopback ports, stopped afterwards (the shared 6379/27017 ones serve other work; a script
run alone uses BENCH_REDIS_URL and BENCH_MONGO_URL, default those). A full run writes
bench/results/*.json and bench/RESULTS.md; ``--quick`` (short runs, to try a change) writes them
to bench/out/quick/ and leaves the kept figures alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import redis

from bench import report
from bench._common import OUT, REPO, write_json
from tools import services

SCRIPTS: dict[str, tuple[list[str], list[str]]] = {  # name: (full run, quick run) arguments
    "sessions": ([], ["--ops", "300", "--sessions", "2000"]),
    "request_path": ([], ["--requests", "3000", "--rounds", "3"]),
    "http_load": ([], ["--pairs", "2", "--login-duration", "5", "--storm-duration", "3",
                       "--storm-runs", "1", "--sockets", "1000"]),
}  # fmt: skip


@contextlib.contextmanager
def private_services() -> Iterator[dict[str, str]]:
    """A redis-server and a MongoDB-compatible server of our own, stopped on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ta-bench-services-") as root:
        redis_port, mongo_port = services.free_ports(2)
        try:
            with services.all_or_nothing(processes):
                processes.append(services.redis_server(redis_port, Path(root), OUT / "redis.log"))
                mongo = Path(root, "mongo")
                processes.append(services.mongodb_server(mongo_port, mongo, OUT / "mongodb.log"))
            yield {
                "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "BENCH_MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
                "BENCH_SERVICE_PIDS": ",".join(str(process.pid) for process in processes),
            }
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)


def environment(urls: dict[str, str]) -> dict[str, str]:
    """The machine and the versions a reader needs to compare these figures."""

    def sh(*args: str) -> str:
        shown = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
        return (shown.stdout + shown.stderr).strip()

    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    client = redis.Redis.from_url(urls["BENCH_REDIS_URL"])
    redis_version = client.info("server")["redis_version"]
    client.close()
    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        urls["BENCH_MONGO_URL"], serverSelectionTimeoutMS=5000
    )
    build = mongo.admin.command("buildInfo")
    mongo.close()
    go_mod = (REPO / "services/ferretdb/go.mod").read_text()  # an embedded FerretDB says unknown
    pinned = re.search(r"FerretDB/FerretDB (v\S+)", go_mod)
    ferret = (
        f" (FerretDB {pinned.group(1) if pinned else '?'})" if "ferretdbVersion" in build else ""
    )
    dirty = " + uncommitted changes" if sh("git", "status", "--porcelain", "tornado_auth") else ""
    return {
        "CPU": f"{cpu.group(1) if cpu else '?'} x {os.cpu_count()}",
        "Python": platform.python_version(),
        "Tornado": importlib.metadata.version("tornado"),
        "redis-py": redis.__version__,
        "bcrypt": importlib.metadata.version("bcrypt"),
        "wrk": sh("wrk", "-v").splitlines()[0].split(" [")[0],
        "Redis": redis_version,
        "MongoDB protocol": build["version"] + ferret,
        "tornado-auth": f"git {sh('git', 'rev-parse', '--short', 'HEAD')}{dirty}",
        "load average at start": Path("/proc/loadavg").read_text().split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, into bench/out/quick/")
    args = parser.parse_args()
    services.exit_on_sigterm()
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "quick" if args.quick else report.RESULTS
    started, began = datetime.datetime.now(datetime.UTC), time.monotonic()
    with private_services() as urls:
        env = dict(os.environ, **urls) | ({"BENCH_SETTLE": "2"} if args.quick else {})
        info = environment(urls)
        for name, (full, quick) in SCRIPTS.items():
            json_file = str((target / f"{name}.json").relative_to(REPO))
            command = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
            print(f"\n$ {shlex.join([*command, '--json', json_file])}", flush=True)
            subprocess.run([*command, "--json", json_file], env=env, cwd=REPO, check=True)
    invoked = shlex.join(["python", "-m", "bench.run", *sys.argv[1:]])
    write_json(target / "run.json", {
        "command": "make bench" if os.environ.get("MAKELEVEL") else invoked,
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": (time.monotonic() - began) / 60,
        "environment": info,
    })  # fmt: skip
    print(f"\nwrote {report.write(target)} and {target}/*.json")


if __name__ == "__main__":
    main()
