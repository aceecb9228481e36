"""Run every benchmark and write bench/RESULTS.md and bench/throughput.png.

    .venv/bin/python bench/run.py [--quick] [--shared-services]      (``make bench`` runs it)

By default the benchmarks get a private redis-server and MongoDB-compatible server (``mongod``, or
the FerretDB runner scripts/services built), started on free loopback ports and stopped
afterwards: the shared 6379/27017 instances serve other people's tests, whose commands would queue
with ours (FerretDB serialises them). ``--shared-services`` uses BENCH_REDIS_URL and
BENCH_MONGO_URL (default 127.0.0.1:6379 and :27017) instead, as does a machine without those
servers. Raw results and service logs go to bench/out/.
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymongo
import pymongo.errors
import redis

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
CHART = BENCH / "throughput.png"
QUICK = {
    "sessions": ["--ops", "300", "--warmup", "50", "--sessions", "2000"],
    "request_path": ["--requests", "3000", "--rounds", "3"],
    "http": [
        *("--duration", "3", "--pairs", "3", "--pair-duration", "2", "--login-duration", "5"),
        *("--sockets", "2000", "--storm-runs", "1"),
    ],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        args, env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def wrk_version() -> str:
    """``wrk -v`` prints its version and usage, then exits 1."""
    shown = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (shown.stdout + shown.stderr).splitlines()[0].split(" [")[0]


def mongo_command(port: int, data: Path) -> list[str] | None:
    """A private MongoDB-compatible server: ``mongod`` if installed, else the FerretDB runner
    that scripts/services built into ~/.cache/tornado-auth/ (newest first), else None."""
    if shutil.which("mongod"):
        return ["mongod", "--bind_ip", "127.0.0.1", "--port", str(port), "--dbpath", str(data)]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tornado-auth"
    runners = sorted(cache.glob("ferretdb-*"), key=lambda path: path.stat().st_mtime)
    runners = [path for path in runners if path.is_file() and os.access(path, os.X_OK)]
    if not runners:
        return None
    return [str(runners[-1]), "-listen", f"127.0.0.1:{port}", "-dir", str(data)]


def answers(urls: dict[str, str]) -> bool:
    """Whether both servers answer a ping."""
    try:
        with redis.Redis.from_url(urls["BENCH_REDIS_URL"], socket_timeout=1) as client:
            client.ping()
        with pymongo.MongoClient(urls["BENCH_MONGO_URL"], serverSelectionTimeoutMS=1000) as mongo:
            mongo.admin.command("ping")
    except (redis.RedisError, pymongo.errors.PyMongoError):
        return False
    return True


class PrivateServices:
    """A redis-server and a MongoDB-compatible server of our own, on free loopback ports,
    stopped on exit; the shared ones when these cannot be started."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.data = tempfile.TemporaryDirectory(prefix="ta-bench-services-")

    def start(self, command: list[str], name: str) -> int:
        log = (OUT / f"{name}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process.pid

    def __enter__(self) -> dict[str, str]:
        redis_port, mongo_port, root = free_port(), free_port(), Path(self.data.name)
        mongo = mongo_command(mongo_port, root / "mongo")
        if not shutil.which("redis-server") or mongo is None:
            print("bench: no redis-server or MongoDB server to start: using the shared ones")
            return shared_urls()
        (root / "mongo").mkdir()
        pids = [
            self.start(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(root)],
                "redis",
            ),
            self.start(mongo, "mongodb"),
        ]  # fmt: skip
        urls = {
            "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "BENCH_MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
            "BENCH_SERVICE_PIDS": ",".join(map(str, pids)),
        }
        deadline = time.monotonic() + 60
        while not answers(urls):  # bounded wait for both to answer
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                self.__exit__()
                raise RuntimeError(f"private services did not start: see {OUT}/*.log")
            time.sleep(0.2)
        print(
            f"bench: private redis-server on :{redis_port}, {Path(mongo[0]).name} on :{mongo_port}"
        )
        return urls

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.data.cleanup()


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
    command = [sys.executable, f"bench/{name}", *args, "--json", str(out.relative_to(REPO))]
    print(f"\n$ {shlex.join(command)}", flush=True)
    subprocess.run(command, env=env, cwd=REPO, check=True)
    return shlex.join([".venv/bin/python", *command[1:]])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run both scripts against the services; what the report needs besides their results."""
    started, began = datetime.datetime.now(datetime.UTC), time.monotonic()
    private = not args.shared_services
    services = PrivateServices() if private else contextlib.nullcontext(shared_urls())
    with services as urls:
        env = dict(os.environ, **urls)
        info = machine(urls)
        commands = {
            "sessions": run_script("sessions.py", QUICK["sessions"] if args.quick else [], env),
            "http": run_script("http_load.py", QUICK["http"] if args.quick else [], env),
            "request_path": run_script(
                "request_path.py", QUICK["request_path"] if args.quick else [], env
            ),
        }
    invoked = shlex.join(["bench/run.py", *sys.argv[1:]])
    return {
        "info": info,
        "started": started.isoformat(),
        "elapsed": time.monotonic() - began,
        "command": "make bench" if os.environ.get("MAKELEVEL") else invoked,
        "private_services": private and "BENCH_SERVICE_PIDS" in urls,
        "commands": commands,
    }


def publish(meta: dict[str, Any]) -> None:
    """RESULTS.md and the chart from bench/out/*.json."""
    from report import chart, render  # matplotlib: installed by ``make bench``

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
    kept = re.search(r"<!-- chaos:.*?<!-- /chaos -->", RESULTS.read_text(), re.S)
    RESULTS.write_text(f"{text.rstrip()}\n\n{kept.group(0)}\n" if kept else text)
    print(f"\nwrote {RESULTS.relative_to(REPO)} and {CHART.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, to try the scripts")
    parser.add_argument("--shared-services", action="store_true", help="see the docstring")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite RESULTS.md from bench/out/ only"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    meta_path = OUT / "run.json"
    if not args.render_only:
        meta_path.write_text(json.dumps(measure(args), indent=2) + "\n")
    meta = json.loads(meta_path.read_text())
    publish(meta)
    print(f"benchmarks took {meta['elapsed'] / 60:.1f} minutes")


if __name__ == "__main__":
    main()
