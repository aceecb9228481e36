"""Run every benchmark and write bench/RESULTS.md and bench/throughput.png.

    .venv/bin/python -m bench.run [--quick] [--shared-services]      (``make bench`` runs it)

By default the benchmarks get a private redis-server and MongoDB-compatible server (``mongod``, or
the FerretDB runner; tools/services.py starts them), on free loopback ports, stopped afterwards:
the shared 6379/27017 instances serve other people's tests, whose commands would queue with ours
(FerretDB serialises them). ``--shared-services`` uses BENCH_REDIS_URL and BENCH_MONGO_URL
(default 127.0.0.1:6379 and :27017) instead. Raw results and service logs go to bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import redis

from tools import services

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
CHART = BENCH / "throughput.png"
DATA = BENCH / "results"
QUICK = {
    "sessions": ["--ops", "300", "--warmup", "50", "--sessions", "2000"],
    "request_path": ["--requests", "3000", "--rounds", "3"],
    "http": [
        *("--duration", "3", "--pairs", "3", "--pair-duration", "2", "--login-duration", "5"),
        *("--sockets", "2000", "--storm-runs", "1"),
    ],
}


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        args, env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def wrk_version() -> str:
    """``wrk -v`` prints its version and usage, then exits 1."""
    shown = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (shown.stdout + shown.stderr).splitlines()[0].split(" [")[0]


@contextlib.contextmanager
def private_services() -> Iterator[dict[str, str]]:
    """A redis-server and a MongoDB-compatible server of our own on free loopback ports (see
    tools/services.py), stopped on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ta-bench-services-") as root:
        redis_port, mongo_port = services.free_ports(2)
        try:
            with services.all_or_nothing(processes):
                processes.append(services.redis_server(redis_port, Path(root), OUT / "redis.log"))
                mongo = Path(root, "mongo")
                processes.append(services.mongodb_server(mongo_port, mongo, OUT / "mongodb.log"))
            print(f"bench: private redis-server on :{redis_port}, MongoDB on :{mongo_port}")
            yield {
                "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "BENCH_MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
                "BENCH_SERVICE_PIDS": ",".join(str(process.pid) for process in processes),
            }
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)


def shared_urls() -> dict[str, str]:
    return {
        "BENCH_REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "BENCH_MONGO_URL": os.environ.get("BENCH_MONGO_URL", "mongodb://127.0.0.1:27017"),
    }


def machine(urls: dict[str, str]) -> dict[str, str]:
    """The machine and every version a reader needs to compare these numbers."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    memory = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    client = redis.Redis.from_url(urls["BENCH_REDIS_URL"])
    redis_version = client.info("server")["redis_version"]
    client.close()
    mongo = pymongo.MongoClient(urls["BENCH_MONGO_URL"], serverSelectionTimeoutMS=5000)
    build = mongo.admin.command("buildInfo")
    mongo.close()
    mongo_version = f"MongoDB wire protocol {build['version']}"
    if "ferretdbVersion" in build:
        pinned = re.search(
            r"FerretDB/FerretDB (v\S+)", (REPO / "services/ferretdb/go.mod").read_text()
        )
        mongo_version += f" (FerretDB {pinned.group(1) if pinned else build['ferretdbVersion']})"
    dirty = sh("git", "status", "--porcelain", "--", "tornado_auth").splitlines()
    return {
        "CPU": f"{cpu.group(1) if cpu else '?'}, nproc {sh('nproc').strip()}",
        "Memory": f"{int(memory.group(1)) / 2**20:.1f} GiB" if memory else "?",
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "Tornado": importlib.metadata.version("tornado"),
        "redis-py (hiredis)": f"{redis.__version__} ({importlib.metadata.version('hiredis')})",
        "pymongo": pymongo.version,
        "bcrypt": importlib.metadata.version("bcrypt"),
        "wrk": wrk_version(),
        "Redis server": f"{redis_version} ({urls['BENCH_REDIS_URL']})",
        "MongoDB server": f"{mongo_version} ({urls['BENCH_MONGO_URL']})",
        "tornado-auth": f"git {sh('git', 'rev-parse', '--short', 'HEAD').strip()}"
        + (f" + uncommitted changes in {len(dirty)} files under tornado_auth/" if dirty else ""),
        "Load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def run_script(name: str, args: list[str], env: dict[str, str]) -> str:
    """Run one benchmark script into bench/out/<name>.json; the command, as a reader types it."""
    out = OUT / f"{Path(name).stem}.json"
    module = f"bench.{Path(name).stem}"
    command = [sys.executable, "-m", module, *args, "--json", str(out.relative_to(REPO))]
    print(f"\n$ {shlex.join(command)}", flush=True)
    subprocess.run(command, env=env, cwd=REPO, check=True)
    return shlex.join([".venv/bin/python", *command[1:]])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run both scripts against the services; what the report needs besides their results."""
    started, began = datetime.datetime.now(datetime.UTC), time.monotonic()
    private = not args.shared_services
    with private_services() if private else contextlib.nullcontext(shared_urls()) as urls:
        env = dict(os.environ, **urls)
        info = machine(urls)
        commands = {
            "sessions": run_script("sessions.py", QUICK["sessions"] if args.quick else [], env),
            "http": run_script("http_load.py", QUICK["http"] if args.quick else [], env),
            "request_path": run_script(
                "request_path.py", QUICK["request_path"] if args.quick else [], env
            ),
        }
    invoked = shlex.join(["python", "-m", "bench.run", *sys.argv[1:]])
    return {
        "info": info,
        "started": started.isoformat(),
        "elapsed": time.monotonic() - began,
        "command": "make bench" if os.environ.get("MAKELEVEL") else invoked,
        "private_services": private,
        "commands": commands,
    }


def publish(meta: dict[str, Any]) -> None:
    """RESULTS.md and the chart from bench/out/*.json."""
    from bench.report import chart, render  # matplotlib: installed by ``make bench``

    sessions = json.loads((OUT / "sessions.json").read_text())
    http = json.loads((OUT / "http_load.json").read_text())
    path_file = OUT / "request_path.json"
    path = json.loads(path_file.read_text()) if path_file.exists() else None
    chart(http, CHART)
    text = render(
        **meta | {"started": datetime.datetime.fromisoformat(meta["started"])},
        sessions=sessions,
        http=http,
        path=path,
        chart_name=CHART.name,
    )
    # the chaos section is bench/chaos.py's (``make chaos``): kept as it is
    kept = re.search(r"<!-- chaos:.*", RESULTS.read_text(), re.S)  # with the notes after it
    RESULTS.write_text(f"{text.rstrip()}\n\n{kept.group(0)}\n" if kept else text)
    DATA.mkdir(exist_ok=True)  # the figures as data, next to the chaos run's
    for name in ("run", "sessions", "http_load", "request_path"):
        if (OUT / f"{name}.json").exists():
            shutil.copyfile(OUT / f"{name}.json", DATA / f"{name}.json")
    print("\nwrote bench/RESULTS.md, bench/throughput.png and bench/results/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, to try the scripts")
    parser.add_argument("--shared-services", action="store_true", help="see the docstring")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite RESULTS.md from bench/out/ only"
    )
    args = parser.parse_args()
    services.exit_on_sigterm()
    OUT.mkdir(parents=True, exist_ok=True)
    meta_path = OUT / "run.json"
    if not args.render_only:
        meta_path.write_text(json.dumps(measure(args), indent=2) + "\n")
    meta = json.loads(meta_path.read_text())
    publish(meta)
    print(f"benchmarks took {meta['elapsed'] / 60:.1f} minutes")


if __name__ == "__main__":
    main()
