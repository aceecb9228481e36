"""Run every benchmark on a private Redis and MongoDB, then write the figures and RESULTS.md:
``python -m bench.run [--quick]`` (``make bench``; see bench/README.md)."""

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

from bench import report
from bench._common import OUT, REPO, commit, write_json
from tools import probes, services


def environment(redis_port: int, mongo_port: int) -> dict[str, str]:
    """The machine and the versions a reader needs to compare these figures."""

    def sh(*args: str) -> str:
        shown = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
        return (shown.stdout + shown.stderr).strip()

    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    redis = re.search(r"redis_version:(\S+)", probes.redis_command(redis_port, "INFO", "server"))
    build = probes.mongo_command(mongo_port, {"buildInfo": 1})
    ferret = " (FerretDB)" if "ferretdbVersion" in build else ""
    return {
        "CPU": f"{cpu.group(1) if cpu else '?'} x {os.cpu_count()}",
        "Python": platform.python_version(),
        "Tornado": importlib.metadata.version("tornado"),
        "redis-py": importlib.metadata.version("redis"),
        "bcrypt": importlib.metadata.version("bcrypt"),
        "wrk": sh("wrk", "-v").splitlines()[0].split(" [")[0],
        "Redis": redis.group(1) if redis else "?",
        "MongoDB protocol": build["version"] + ferret,
        "tornado-auth": f"git {commit()}",
        "load average at start": Path("/proc/loadavg").read_text().split()[0],
    }


@contextlib.contextmanager
def private_services() -> Iterator[tuple[int, int]]:
    """A private redis-server and MongoDB-compatible server on free loopback ports, their data in
    a temporary directory, logs in bench/out/; stopped on exit. Yields their ports."""
    redis_port, mongo_port = services.free_ports(2)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ta-bench-services-") as root:
        try:
            with services.all_or_nothing(processes):
                processes.append(services.redis_server(redis_port, Path(root), OUT / "redis.log"))
                mongo = Path(root, "mongo")
                processes.append(services.mongodb_server(mongo_port, mongo, OUT / "mongodb.log"))
            yield redis_port, mongo_port
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, into bench/out/quick/")
    parser.add_argument(
        "--only",
        help="some of the scripts, comma-separated (run.json is kept unless in_process or "
        "http_load is among them)",
    )
    options = parser.parse_args()
    quick = options.quick
    names = ("peers", "profile", "in_process", "http_load", "sockets", "redis_memory", "processes")
    chosen = options.only.split(",") if options.only else list(names)
    if not set(chosen) <= set(names):
        parser.error(f"--only takes some of {', '.join(names)}")
    services.exit_on_sigterm()
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "quick" if quick else report.RESULTS
    started, began = datetime.datetime.now(datetime.UTC), time.monotonic()
    with private_services() as (redis_port, mongo_port):
        info = environment(redis_port, mongo_port)
        env = os.environ | {
            "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "BENCH_MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
        } | ({"BENCH_SETTLE": "2"} if quick else {})  # fmt: skip
        for name in chosen:
            json_file = str((target / f"{name}.json").relative_to(REPO))
            command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
            print(f"\n$ {shlex.join([*command, '--json', json_file])}", flush=True)
            subprocess.run([*command, "--json", json_file], env=env, cwd=REPO, check=True)
    # the other figures, and the run they came from, stay as they were; run.json says where the
    # figures of in_process and http_load (the section "Everything else") came from
    if options.only and not {"in_process", "http_load"} & set(chosen):
        print(f"\nwrote {report.write(target)} and {', '.join(chosen)} in {target}")
        return
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
