"""Several processes on one machine: the dashboard's throughput with ``serve --processes 1`` and
``--processes 2``, then through nginx (``deploy/nginx.conf.template``) in front of one and two
single-process servers, with the CPU each part used: the servers, nginx, and the load generator
itself, which shares the machine's cores (see bench/README.md).

    .venv/bin/python -m bench.processes [--quick] --json F
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import _common as common
from bench.http_load import wrk
from bench.peers import check, our_sessions
from tools import services

FULL = {"sessions": 20_000, "rounds": 5, "seconds": 5, "connections": 64}
QUICK = {"sessions": 2000, "rounds": 1, "seconds": 2, "connections": 64}
TEMPLATE = common.REPO / "deploy" / "nginx.conf.template"


def tree(pid: int) -> list[int]:
    """A process and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(child) for child in children]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of live processes."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / common.TICK
    return total


def write_config(ports: list[int], root: Path, port: int) -> None:
    """``root``/nginx.conf: the deploy template listening on ``port``, upstreams ``ports``."""
    root.mkdir(parents=True, exist_ok=True)
    upstreams = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in ports)
    config = TEMPLATE.read_text().replace("@PREFIX@", str(root))
    config = config.replace("@LISTEN@", f"127.0.0.1:{port}").replace("@UPSTREAMS@\n", upstreams)
    (root / "nginx.conf").write_text(config)


@contextlib.asynccontextmanager
async def nginx(ports: list[int], root: Path) -> AsyncIterator[tuple[str, int]]:
    """nginx from the deploy template in front of ``ports``: its URL and master pid."""
    if shutil.which("nginx") is None:
        raise SystemExit("bench.processes: nginx is missing (apt-get install nginx)")
    port = services.free_ports(1)[0]
    write_config(ports, root, port)
    command = ["nginx", "-c", str(root / "nginx.conf"), "-p", str(root), "-e",
               str(root / "error.log"), "-g", "daemon off;"]  # fmt: skip
    async with common.spawned(command, root, dict(os.environ), root / "nginx.out", port,
                              "nginx") as server:  # fmt: skip
        yield server.url, server.process.pid


async def measure(url: str, cookies: Path, servers: list[int], proxy: int | None,
                  args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One wrk run, with the cores used by the servers, nginx, wrk and the whole machine."""
    server_pids = [pid for root in servers for pid in tree(root)]
    proxy_pids = tree(proxy) if proxy else []
    before = (cpu_seconds(server_pids), cpu_seconds(proxy_pids), common._machine_busy(),
              resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic())  # fmt: skip
    figures = await wrk(url, args.connections, args.seconds, threads=2, cookies=str(cookies))
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = time.monotonic() - before[4]
    wrk_cpu = (after_children.ru_utime + after_children.ru_stime
               - before[3].ru_utime - before[3].ru_stime)  # fmt: skip
    if figures["non_2xx"]:
        raise RuntimeError(f"{url}: {figures['non_2xx']} responses were not 2xx")
    return figures | {
        "cores": {
            "servers": (cpu_seconds(server_pids) - before[0]) / elapsed,
            "nginx": (cpu_seconds(proxy_pids) - before[1]) / elapsed,
            "wrk": wrk_cpu / elapsed,
            "machine": (common._machine_busy() - before[2]) / elapsed,
        }
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cores = {part: statistics.median(run["cores"][part] for run in runs)
             for part in runs[0]["cores"]}  # fmt: skip
    rps = statistics.median(run["rps"] for run in runs)
    return {
        "rps": rps,
        "p50_ms": statistics.median(run["latency_ms"]["p50"] for run in runs),
        "p99_ms": statistics.median(run["latency_ms"]["p99"] for run in runs),
        "cores": cores,
        "server_cpu_us": 1e6 * cores["servers"] / rps,
        "runs": runs,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = secrets.token_hex(4)
    base = {"SESSIONS__URL": common.REDIS_URL, "SESSIONS__KEY_PREFIX": f"procs:{run}:",
            "USERS__URL": f"{common.MONGO_URL}/ta_procs_{run}"}  # fmt: skip
    env = common.server_env(base)
    proxied = env | {"TORNADO_AUTH_SERVER__XHEADERS": "true"}
    cookies = await our_sessions(env, args.sessions)
    results: dict[str, Any] = {"command": common.command_line(),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "commit": common.commit(), "params": vars(args),
                               "cores": os.cpu_count(), "setups": {}}  # fmt: skip
    setups = ("serve --processes 1", "serve --processes 2", "nginx + 1 process",
              "nginx + 2 processes")  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory(prefix="ta-bench-nginx-") as tmp:
        for name in setups:
            async with contextlib.AsyncExitStack() as stack:
                log = common.OUT / f"processes-{run}.log"
                if name.startswith("serve"):
                    count = int(name[-1])
                    server = await stack.enter_async_context(common.serve(env, log, count))
                    url, pids, proxy = server.url, [server.process.pid], None
                else:
                    count = int(name.split()[2])
                    started = [await stack.enter_async_context(common.serve(proxied, log))
                               for _ in range(count)]  # fmt: skip
                    ports = [int(s.url.rsplit(":", 1)[1]) for s in started]
                    root = Path(tmp, f"nginx-{count}")
                    url, proxy = await stack.enter_async_context(nginx(ports, root))
                    pids = [s.process.pid for s in started]
                url = f"{url}/api/dashboard"
                await check(url, cookies)
                await wrk(url, args.connections, 2, threads=2, cookies=str(cookies))  # warm
                for _ in range(args.rounds):
                    async with common.quiet():  # the machine settles first
                        pass
                    runs[name].append(await measure(url, cookies, pids, proxy, args))
                row = summary(runs[name])
                results["setups"][name] = row
                cores = row["cores"]
                print(f"  {name:>20}: {row['rps']:7,.0f} req/s, p50 {row['p50_ms']:.2f} ms, "
                      f"p99 {row['p99_ms']:.2f} ms; cores: servers {cores['servers']:.2f}, "
                      f"nginx {cores['nginx']:.2f}, wrk {cores['wrk']:.2f}, "
                      f"machine {cores['machine']:.2f}", flush=True)  # fmt: skip
    one = results["setups"]["serve --processes 1"]["rps"]
    for row in results["setups"].values():
        row["vs_one_process"] = row["rps"] / one
    return results


if __name__ == "__main__":
    common.cli(__doc__, main, FULL, QUICK)
