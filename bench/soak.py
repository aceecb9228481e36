"""Soak: the shipped Locust scenario against ``serve --processes 2`` on Redis + MongoDB for a long
while (30 minutes by default), sampling once a minute every server process's RSS and open file
descriptors, the connections to Redis and MongoDB and the p99 of the minute (from the server's
own request histogram); bench/results/soak.json, soak.svg and a section of bench/RESULTS.md.

    make soak                       # 30 minutes, 50 Locust users
    make soak SOAK_DURATION=5m SOAK_USERS=20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tools import probes, services
from tornado_auth.settings import parse_duration

from . import _common as common
from . import report

OUT = common.OUT
RESULTS = common.REPO / "bench" / "results"
LATENCY = "tornado_auth_http_request_duration_seconds"
ESTABLISHED = "01"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return sorted(int(child) for child in text.split())


def connections_to(port: int) -> int:
    """Established TCP connections whose far end is ``port`` (clients of that service)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote, state = fields[2], fields[3]
                if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def latency_buckets(text: str) -> tuple[dict[float, float], float]:
    """The request histogram summed over every label: cumulative count per bound, and total."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LATENCY:
            continue
        for sample in family.samples:
            if sample.name == LATENCY + "_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets, buckets.get(math.inf, 0.0)


def quantile(q: float, now: dict[float, float], before: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over the increase between two scrapes, in seconds."""
    bounds = sorted(now)
    counts = [now[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


async def scrape(url: str) -> str:
    response = await AsyncHTTPClient().fetch(url, request_timeout=10)
    return str(response.body.decode())


async def sample(
    server: common.Server, metrics_url: str, ports: dict[str, int], previous: dict[float, float]
) -> tuple[dict[str, Any], dict[float, float]]:
    supervisor = server.process.pid
    pids = [supervisor, *children(supervisor)]
    try:
        buckets, total = latency_buckets(await scrape(metrics_url))
    except (OSError, HTTPClientError) as error:  # noted in the sample; the run goes on
        print(f"soak: metrics not read: {error}", flush=True)
        buckets, total = previous, previous.get(math.inf, 0.0)
    p99 = quantile(0.99, buckets, previous)
    return {
        "at": time.time(),
        "processes": {
            str(pid): {
                "role": "supervisor" if pid == supervisor else "worker",
                "rss_kib": rss_kib(pid),
                "open_files": open_files(pid),
            }
            for pid in pids
        },
        "redis_connections": connections_to(ports["redis"]),
        "mongodb_connections": connections_to(ports["mongodb"]),
        "requests": total - previous.get(math.inf, 0.0),
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
    }, buckets


async def locust(url: str, users: int, seconds: float, log: Path) -> asyncio.subprocess.Process:
    command = [
        str(Path(sys.executable).with_name("locust")), "-f", "loadtest/locustfile.py",
        "--headless", "--host", url, "-u", str(users), "-r", "10", "-t", f"{int(seconds)}s",
        "--csv", str(OUT / "soak"), "--only-summary",
    ]  # fmt: skip
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            *command, cwd=common.REPO, stdout=output, stderr=output
        )


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    seconds, interval = parse_duration(args.duration), parse_duration(args.interval)
    redis_port, mongo_port, metrics_port = services.free_ports(3)
    ports = {"redis": redis_port, "mongodb": mongo_port}
    root = Path(tempfile.mkdtemp(prefix="ta-soak-"))
    OUT.mkdir(parents=True, exist_ok=True)
    started: list[Any] = []
    params = {"duration_s": seconds, "interval_s": interval, "users": args.users, "processes": 2}
    results: dict[str, Any] = {
        "command": common.command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "params": params,
        "samples": [],
    }
    try:
        started.append(services.redis_server(redis_port, root, OUT / "soak-redis.log"))
        started.append(services.mongodb_server(mongo_port, root / "mongo", OUT / "soak-mongo.log"))
        env = common.server_env({
            "SESSIONS__URL": f"redis://{probes.HOST}:{redis_port}/0",
            "USERS__URL": f"mongodb://{probes.HOST}:{mongo_port}/soak",
            "METRICS__LISTEN": f"{probes.HOST}:{metrics_port}",
            "THROTTLE__IP_REGISTRATIONS": "0",  # every Locust user registers from one address
        })  # fmt: skip
        metrics_url = f"http://{probes.HOST}:{metrics_port}/metrics"
        async with common.serve(env, OUT / "soak-server.log", processes=2) as server:
            await asyncio.to_thread(
                services.wait_until, lambda: len(children(server.process.pid)) == 2, [],
                server.log, "two workers", 60,
            )  # fmt: skip
            load = await locust(server.url, args.users, seconds, OUT / "soak-locust.log")
            previous: dict[float, float] = {}
            while True:
                row, previous = await sample(server, metrics_url, ports, previous)
                results["samples"].append(row)
                print(f"soak: {len(results['samples'])} samples, p99 {row['p99_ms']} ms",
                      flush=True)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(load.wait(), interval)
                if load.returncode is not None:
                    break
            row, _ = await sample(server, metrics_url, ports, previous)
            results["samples"].append(row)
            results["locust_exit"] = load.returncode
    finally:
        for process in started:
            process.terminate()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
    results["summary"] = summary(results["samples"])
    return results


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last figures of each process (workers by position), connections, p99."""
    first, last = samples[0], samples[-1]

    def by_role(row: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted(row["processes"].values(), key=lambda p: p["role"] != "supervisor")

    processes = [
        {"role": start["role"], "rss_kib": [start["rss_kib"], end["rss_kib"]],
         "open_files": [start["open_files"], end["open_files"]]}
        for start, end in zip(by_role(first), by_role(last), strict=False)
    ]  # fmt: skip
    p99 = [row["p99_ms"] for row in samples if row["p99_ms"] is not None]
    return {
        "minutes": round((last["at"] - first["at"]) / 60, 1),
        "processes": processes,
        "redis_connections_max": max(row["redis_connections"] for row in samples),
        "mongodb_connections_max": max(row["mongodb_connections"] for row in samples),
        "requests": sum(row["requests"] for row in samples),
        "p99_ms_max": max(p99, default=None),
        "p99_ms_median": sorted(p99)[len(p99) // 2] if p99 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="30m", help="how long Locust runs (30m)")
    parser.add_argument("--users", type=int, default=50, help="Locust users (50)")
    parser.add_argument("--interval", default="60s", help="time between samples (60s)")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    results = asyncio.run(soak(args))
    common.write_json(args.json, results)
    if args.json.parent == RESULTS:
        (RESULTS / "soak.svg").write_text(report.soak_chart(results))
        print(f"wrote {args.json}, {RESULTS / 'soak.svg'} and {report.write()}")


if __name__ == "__main__":
    main()
