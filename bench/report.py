"""RESULTS.md and the throughput chart, from the JSON results of sessions.py and http_load.py."""

from __future__ import annotations

import datetime
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TARGET_RATIO = 0.9
TARGET_LOGIN = 0.9
TARGET_STORM = 2.0
TARGET_LEVELS = (1, 10, 50)


def chart(http: dict[str, Any], path: Path) -> None:
    """Requests/s and latency (p50, p99) against connections, healthz vs dashboard."""
    rows = http["overhead"]
    levels = [row["concurrency"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in (("healthz", "tab:gray"), ("dashboard", "tab:blue")):
        label = "GET /healthz" if name == "healthz" else "GET /api/dashboard (session)"
        left.plot(levels, [r[name]["rps"] for r in rows], "o-", color=color, label=label)
        right.plot(
            levels, [r[name]["latency_ms"]["p50"] for r in rows], "o-", color=color,
            label=f"{name} p50",
        )  # fmt: skip
        right.plot(
            levels, [r[name]["latency_ms"]["p99"] for r in rows], "s--", color=color,
            label=f"{name} p99",
        )  # fmt: skip
    for row in rows:
        note = f"{row['ratio']:.2f}"
        if row["dashboard"]["non_2xx"]:
            note += f"\n{row['dashboard']['non_2xx']} non-2xx"
        left.annotate(
            note, (row["concurrency"], row["dashboard"]["rps"]), textcoords="offset points",
            xytext=(0, -22), ha="center", fontsize=8, color="tab:blue",
        )  # fmt: skip
    left.text(0.02, 0.02, "labels: dashboard/healthz", transform=left.transAxes, fontsize=8)
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("concurrent connections (wrk -c)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylabel("requests/s")
    left.set_ylim(bottom=0)
    left.set_title("Throughput, one server process")
    right.set_yscale("log")
    right.set_ylabel("latency (ms)")
    right.set_title("Latency")
    figure.suptitle("tornado-auth: Redis session vs trivial endpoint (loopback, wrk)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _cpu(cpu: dict[str, float]) -> str:
    return (
        f"server {cpu['server_cores']:.2f}, services {cpu['services_cores']:.2f}, "
        f"bench {cpu['bench_cores']:.2f}, others {cpu['foreign_cores']:.2f}"
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def summary(sessions: dict[str, Any], http: dict[str, Any]) -> list[str]:
    rows = []
    for row in http["overhead"]:
        if row["concurrency"] in TARGET_LEVELS:
            rows.append(
                [
                    f"(a) dashboard/healthz req/s at {row['concurrency']} connection"
                    + ("s" if row["concurrency"] > 1 else ""),
                    f">= {TARGET_RATIO}",
                    f"{row['ratio']:.2f}",
                    _met(row["ratio"] >= TARGET_RATIO),
                ]
            )
    login = http["login"]
    rows.append(
        [
            "(b) sign-ins/s at cost 12 vs the bcrypt limit "
            f"({http['bcrypt']['limit_per_s']:.2f}/s)",
            f">= {TARGET_LOGIN:.0%}",
            f"{login['result']['rps']:.2f}/s = {login['fraction_of_limit']:.0%}",
            _met(login["fraction_of_limit"] >= TARGET_LOGIN),
        ]
    )
    storm = http["storm"]
    rows.append(
        [
            "(c) dashboard p99 during a 50-connection sign-in storm vs without",
            f"<= {TARGET_STORM:g}x",
            f"{_ms(storm['during']['latency_ms']['p99'])} ms vs "
            f"{_ms(storm['alone']['latency_ms']['p99'])} ms = {storm['p99_ratio']:.1f}x",
            _met(storm["p99_ratio"] <= TARGET_STORM),
        ]
    )
    memory = sessions.get("redis_memory")
    if memory:
        rows.append(
            [
                "Redis bytes per login session (used_memory growth / MEMORY USAGE sum)",
                f"reference: {memory['reference_connect_redis_bytes']} (connect-redis)",
                f"{memory['info_bytes_per_session']:.0f} / "
                f"{memory['memory_usage_bytes_per_session']:.0f}",
                f"{memory['info_bytes_per_session'] / memory['reference_connect_redis_bytes']:.1f}x"
                " the reference",
            ]
        )
    sockets = http.get("websockets")
    if sockets:
        rows.append(
            [
                f"(d) server memory per idle authenticated WebSocket ({sockets['opened']} open)",
                "no target",
                f"{sockets['bytes_per_socket'] / 1024:.1f} KiB",
                "",
            ]
        )
    return _table(["measure", "target", "measured", "verdict"], rows)


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    if len(ordered) == 1:
        return f"{ordered[0]:.2f}"
    return f"{ordered[0]:.2f} / {statistics.median(ordered):.2f} / {ordered[-1]:.2f}"


def overhead_section(http: dict[str, Any], chart_name: str) -> list[str]:
    params = http["params"]
    pairs, seconds = params.get("pairs", 1), params.get("pair_duration", params["duration"])
    rows = []
    for row in http["overhead"]:
        health, dash = row["healthz"], row["dashboard"]
        others = max(health["cpu"]["foreign_cores"], dash["cpu"]["foreign_cores"])
        rows.append(
            [
                str(row["concurrency"]),
                f"{health['rps']:,.0f}",
                f"{dash['rps']:,.0f}",
                f"**{row['ratio']:.2f}**",
                _spread(row.get("ratios", [row["ratio"]])),
                f"{_ms(health['latency_ms']['p50'])} / {_ms(health['latency_ms']['p99'])}",
                f"{_ms(dash['latency_ms']['p50'])} / {_ms(dash['latency_ms']['p99'])}",
                f"{health['non_2xx']} / {dash['non_2xx']}",
                f"{health['cpu']['server_cores']:.2f} / {dash['cpu']['server_cores']:.2f}",
                f"{health['server_cpu_us_per_request']:.0f} / "
                f"{dash['server_cpu_us_per_request']:.0f}",
                f"{others:.2f}",
            ]
        )
    header = [
        "connections",
        "healthz req/s",
        "dashboard req/s",
        "ratio",
        "pairs' ratios: min / median / max",
        "healthz p50 / p99 ms",
        "dashboard p50 / p99 ms",
        "non-2xx (h / d)",
        "server CPU cores (h / d)",
        "server CPU µs per request (h / d)",
        "others' CPU cores",
    ]
    lines = [
        "## (a) Session overhead: `GET /api/dashboard` vs `GET /healthz`",
        "",
        "The same server, the same request headers (the session cookie and a Chrome User-Agent are "
        "sent to both; `/healthz` ignores them). The dashboard resolves the session behind the "
        "cookie (the store is Redis) and answers from it; nothing is written (the touch interval "
        "is 60 s). wrk uses one thread at 1 connection, two otherwise. Server CPU per request = "
        "server CPU cores / requests per second.",
        "",
        *_table(header, rows),
        "",
        f"![throughput and latency against concurrency]({chart_name})",
        "",
        f"Each level is one block of {pairs} back-to-back pairs of {seconds:g} s runs (healthz "
        "then dashboard, then the other way round, and so on), started once the machine is "
        "quiet. The figures of each endpoint pool its runs: requests over time, the median of "
        "each latency percentile. The ratio is the dashboard's pooled req/s over healthz's. On "
        "this shared machine the speed of the CPU varies from one second to the next with "
        "other tenants' load, so single pairs range widely (their spread is shown); short "
        "alternating runs put the slow and fast moments on both endpoints alike, and pooling "
        "them averages the rest out.",
        "",
    ]
    levels = [r for r in http["overhead"] if r["concurrency"] in TARGET_LEVELS]
    missed = [r for r in levels if r["ratio"] < TARGET_RATIO]
    if missed:
        names = ", ".join(str(r["concurrency"]) for r in missed)
        lines += [
            f"Target (ratio >= {TARGET_RATIO}) **missed** at {names} connection(s). The one "
            "server process is CPU-bound on its event loop (about one core in every run), so the "
            "ratio is the ratio of server CPU per request (the last columns but one).",
            "",
        ]
    counts = http["server"].get("log_counts", {})
    unavailable = sum(n for m, n in counts.items() if "/api/dashboard" in m and "unavailable" in m)
    too_many = any("Too many connections" in message for message in counts)
    for row in http["overhead"]:
        if row["concurrency"] in TARGET_LEVELS:
            continue
        bad = row["dashboard"]["non_2xx"]
        note = (
            f"{row['concurrency']} connections is beyond the brief's levels, measured to show "
            "the server past 100 concurrent requests. "
        )
        if bad:
            note += f"**{bad} dashboard responses were not 2xx**, so its req/s overstates "
            note += "what clients got."
            if unavailable:
                note += (
                    f" The server log has {unavailable} `503 GET /api/dashboard ... Session store "
                    "unavailable` lines, while Redis was up: redis-py's asyncio "
                    "connection pool holds at most 100 connections by default and raises "
                    "MaxConnectionsError (`Too many connections`) at once beyond that"
                    + (", as the logged commit failures say." if too_many else ".")
                )
        else:
            note += "No dashboard response failed in this run."
        lines += [note, ""]
    return lines


def request_path_section(path: dict[str, Any] | None) -> list[str]:
    if not path:
        return []
    rows = [
        [name, f"{row['min_us']:.1f}", f"{row['median_us']:.1f}"]
        for name, row in path["endpoints"].items()
    ]
    healthz = path["endpoints"]["healthz"]["min_us"]
    steps = [[label, f"{ns:,.0f}"] for label, ns in path["steps_ns"].items()]
    params = path["params"]
    return [
        "### The same two requests in-process, without the network",
        "",
        f"`bench/request_path.py` hands the app {params['requests']:,} requests of each kind per "
        f"round, {params['rounds']} rounds, as `HTTPServerRequest` objects with the headers wrk "
        "sends, on the same Redis session store and cache, with no socket and no HTTP parsing: "
        "routing, handler, session and response only. These figures barely vary between runs.",
        "",
        *_table(["request", "min µs", "median µs"], rows),
        "",
        f"The session costs the dashboard **{path['session_us']:.1f} µs** a request over "
        f"`/healthz` ({path['session_us'] / healthz:.0%} of this in-process path), which the "
        "HTTP layer and the kernel then dilute in the wrk figures above. Its steps, each timed "
        "alone:",
        "",
        *_table(["step", "ns"], steps),
        "",
    ]


def login_section(http: dict[str, Any]) -> list[str]:
    bcrypt, login, storm = http["bcrypt"], http["login"], http["storm"]
    result = login["result"]
    storm_result = storm["during"]["storm"]
    lines = [
        "## (b) Sign-in throughput at bcrypt cost 12",
        "",
        f"One cost-12 check (`bcrypt.checkpw` of a 44-byte pre-hash, measured in-process, median "
        f"of {len(bcrypt['check_seconds'])}): **{1000 * bcrypt['median_check_seconds']:.0f} ms**. "
        f"Limit = cores / check = {bcrypt['cores']} / {bcrypt['median_check_seconds']:.3f} s = "
        f"**{bcrypt['limit_per_s']:.2f} sign-ins/s**. For comparison, {bcrypt['cores']} threads "
        f"checking at once in-process reach {bcrypt['parallel_checks_per_s']:.2f}/s on this "
        "machine.",
        "",
        *_table(
            ["load", "sign-ins/s", "of the limit", "p50 / p99 ms", "non-2xx", "CPU cores"],
            [
                [
                    f"{login['connections']} connections, {result['duration_us'] / 1e6:.0f} s",
                    f"{result['rps']:.2f}",
                    f"**{login['fraction_of_limit']:.0%}**",
                    f"{_ms(result['latency_ms']['p50'])} / {_ms(result['latency_ms']['p99'])}",
                    str(result["non_2xx"]),
                    _cpu(login["cpu"]),
                ],
                [
                    f"{storm['storm_connections']} connections (the storm of (c)), "
                    f"{storm_result['duration_us'] / 1e6:.0f} s",
                    f"{storm_result['rps']:.2f}",
                    f"{storm['storm_fraction_of_limit']:.0%}",
                    f"{_ms(storm_result['latency_ms']['p50'])} / "
                    f"{_ms(storm_result['latency_ms']['p99'])}",
                    str(storm_result["non_2xx"]),
                    "(shared with the dashboard load)",
                ],
            ],
        ),
        "",
    ]
    if login["fraction_of_limit"] < TARGET_LOGIN:
        lines += [
            f"Target (>= {TARGET_LOGIN:.0%} of the limit) **missed**: "
            f"{login['fraction_of_limit']:.0%} of cores / one check, "
            f"{login['fraction_of_parallel']:.0%} of what {bcrypt['cores']} bcrypt threads "
            "achieve in-process. The server process used "
            f"{login['cpu']['server_cores']:.2f} of {bcrypt['cores']} cores; the rest of each "
            "sign-in (its store round trips, the event loop) competes with bcrypt for them.",
            "",
        ]
    return lines


def storm_section(http: dict[str, Any]) -> list[str]:
    storm = http["storm"]
    rows = []
    for label, key in (("alone", "alone"), ("during the storm", "during")):
        run = storm[key]
        rows.append(
            [
                label,
                f"{run['rps']:,.0f}",
                _ms(run["latency_ms"]["p50"]),
                f"**{_ms(run['latency_ms']['p99'])}**",
                _ms(run["latency_ms"]["max"]),
                str(run["non_2xx"]),
                _cpu(run["cpu"]),
            ]
        )
    verdict = "met" if storm["p99_ratio"] <= TARGET_STORM else "**missed**"
    ratios = storm.get("p99_ratios", [storm["p99_ratio"]])
    return [
        "## (c) Dashboard latency during a sign-in storm",
        "",
        f"`GET /api/dashboard` at {storm['dashboard_connections']} connections (wrk -t1), alone "
        f"and while {storm['storm_connections']} other connections sign in as fast as they can "
        "(wrk -t1, started just before and ending 4 s after the dashboard run).",
        "",
        *_table(["dashboard", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "CPU cores"], rows),
        "",
        f"p99 during / alone = **{storm['p99_ratio']:.1f}x** (target <= {TARGET_STORM:g}x: "
        f"{verdict}); p50 {storm['p50_ratio']:.1f}x."
        + (
            f" The measurement was made {len(ratios)} times, each pair after the machine was "
            "quiet; the table shows the run with the median p99 ratio. All p99 ratios: "
            + " / ".join(f"{ratio:.1f}x" for ratio in ratios)
            + "."
            if len(ratios) > 1
            else ""
        ),
        "",
        *after_storm(storm, http["bcrypt"]),
    ]


def after_storm(storm: dict[str, Any], bcrypt: dict[str, Any]) -> list[str]:
    after = storm.get("after")
    if not after:
        return []
    checks = after["server_cpu_seconds"] / bcrypt["median_check_seconds"]
    line = (
        f"When the storm's wrk ended, closing its {storm['storm_connections']} connections with a "
        f"sign-in in flight on each, the server stayed busy for another "
        f"{after['seconds_until_idle']:.0f} s and used {after['server_cpu_seconds']:.1f} "
        f"CPU-seconds, about {checks:.0f} cost-12 checks"
    )
    threads = bcrypt["cores"]  # the server hashes on one thread per core
    if checks > storm["storm_connections"] / 5:
        line += (
            ": sign-ins whose clients have gone are still computed, so a client that gives up "
            "still costs a check, and one that retries costs two."
        )
    elif checks <= 2 * threads:
        line += (
            f" (at most the {threads} checks already running): a sign-in whose client has gone "
            "is dropped before its check starts, so a client that gives up costs nothing more."
        )
    return [line + ("" if line.endswith(".") else "."), ""]


def websocket_section(http: dict[str, Any]) -> list[str]:
    ws = http.get("websockets")
    if not ws:
        return []
    lines = [
        "## (d) Memory per idle WebSocket",
        "",
        f"{ws['sockets']:,} sessions of distinct users were written to the server's Redis store "
        "(as sign-ins create them) and their cookies signed with the server's secret; one asyncio "
        f"client process then opened one authenticated `/ws/dashboard` socket per session "
        f"({ws['handshakes_in_flight']} handshakes in flight at most) and waited for each "
        "socket's `hello` message. Server VmRSS (/proc/PID/status) before (once the machine "
        f"was idle again, after {ws['waited_for_quiet_s']:.0f} s) and after:",
        "",
        *_table(
            [
                "sockets open",
                "failed",
                "VmRSS before",
                "VmRSS after",
                "per socket",
                "server fds",
                "time to open",
            ],
            [
                [
                    f"{ws['opened']:,}",
                    str(ws["failures"]),
                    f"{ws['rss_before'] / 2**20:.1f} MiB",
                    f"{ws['rss_after'] / 2**20:.1f} MiB",
                    f"**{ws['bytes_per_socket']:,.0f} B**",
                    f"{ws['server_open_files_before']} -> {ws['server_open_files_after']}",
                    f"{ws['open_seconds']:.1f} s",
                ]
            ],
        ),
        "",
    ]
    if ws["failures"]:
        lines += [f"First failure: `{ws['first_failure']}`", ""]
    return lines


def sessions_section(sessions: dict[str, Any]) -> list[str]:
    params = sessions["params"]
    full = 1 + params["warmup"] + params["ops"]  # the first session and every create
    ops = list(next(iter(sessions["backends"].values())))
    header = ["backend", *(f"{op.removesuffix('_full')} ({full:,} in store)" if op.endswith("_full")
                           else op for op in ops)]  # fmt: skip
    rows = [
        [backend, *(f"{row[op]['p50_ms']:.3f}" for op in ops)]
        for backend, row in sessions["backends"].items()
    ]
    cpu_notes = [
        f"{backend}: {_cpu(cpu)} (run {cpu['attempt']})"
        for backend, cpu in sessions.get("cpu", {}).items()
    ]
    lines = [
        "## Session backends: one operation at a time",
        "",
        f"{params['ops']:,} sequential operations of each kind after {params['warmup']} untimed "
        "ones, through `services.sessions` of `start_services` (no per-process cache, touch "
        "interval 0), on a new store holding one session: `load` = a session by its token; "
        "`touch` = a load, then a commit that moves the expiry; `save` = a load, one changed "
        "key, a commit; `create` = a sign-in, a new logged-in `Session` committed (a "
        f"distinct user each time). Then `load` and `touch` again, once the creates have left "
        f"{full:,} sessions in the store.",
        "",
        *_table(header, rows),
        "",
        "Median milliseconds an operation; p99, mean and ops/s are in the data.",
        "",
        "CPU cores during each backend's run: " + "; ".join(cpu_notes) + ".",
        "",
    ]
    for backend, ops in sessions["backends"].items():
        if "touch_full" in ops and ops["touch_full"]["p50_ms"] > 3 * ops["touch"]["p50_ms"]:
            lines += [
                f"**{backend}: a touch costs {ops['touch_full']['p50_ms']:.1f} ms (p50) with "
                f"{full:,} sessions in the store against {ops['touch']['p50_ms']:.1f} ms with one**"
                f" (load: {ops['load_full']['p50_ms']:.1f} vs {ops['load']['p50_ms']:.1f} ms): "
                "updates slow down as the store grows.",
                "",
            ]
    return lines


def memory_section(sessions: dict[str, Any]) -> list[str]:
    memory = sessions.get("redis_memory")
    if not memory:
        return []
    n = memory["sessions"]
    clean = memory["dbsize_delta"] == memory["dbsize_expected"]
    reference = memory["reference_connect_redis_bytes"]
    lines = [
        "## Redis memory per login session",
        "",
        f"{n:,} sign-ins of distinct users (user id, email, role, remember_me, ip 203.0.113.7, a "
        f"{memory['user_agent_chars']}-character desktop Chrome User-Agent), one connection, one "
        "at a time. Each creates a session (one JSON string), a per-user index (sorted set) and an "
        "entry in the "
        "live-sessions sorted set.",
        "",
        *_table(
            ["measure", "bytes per session"],
            [
                [
                    "`INFO memory` used_memory growth / sessions",
                    f"**{memory['info_bytes_per_session']:.0f}**",
                ],
                [
                    "sum of `MEMORY USAGE` (SAMPLES 0) / sessions",
                    f"**{memory['memory_usage_bytes_per_session']:.0f}**",
                ],
                [
                    f"  session string (encoding: {memory['session_encoding']}; "
                    f"{memory['session_value_bytes']} bytes of JSON)",
                    f"{memory['memory_usage_session_per_session']:.0f}",
                ],
                [
                    f"  user index (encoding: {memory['user_index_encoding']})",
                    f"{memory['memory_usage_user_index_per_session']:.0f}",
                ],
                [
                    f"  share of the live index (encoding: {memory['live_index_encoding']})",
                    f"{memory['memory_usage_live_index_per_session']:.0f}",
                ],
                [
                    "express-session + connect-redis (reference given to the project)",
                    f"{reference}",
                ],
            ],
        ),
        "",
        f"used_memory also counts what `MEMORY USAGE` does not: the keyspace and expiry "
        f"dictionaries' entries for the {memory['dbsize_delta']:,} new keys. "
        + (
            "The key count grew by exactly the expected number, so no other client wrote meanwhile."
            if clean
            else f"**The key count grew by {memory['dbsize_delta']} instead of "
            f"{memory['dbsize_expected']}: another client wrote meanwhile; used_memory is "
            "approximate.**"
        ),
        "",
        f"That is **{memory['info_bytes_per_session'] / reference:.1f}x** the 280-byte reference, "
        "which stores the session cookie and data only: this session also holds the sign-in's "
        "address, User-Agent and times (shown on the sessions page), and the two indexes are what "
        "make listing, revoking and counting a user's sessions possible. Before 0.2 each session "
        "was a hash, which a User-Agent longer than `hash-max-listpack-value` (64 bytes) puts in "
        "Redis's hashtable encoding: 1,112 bytes for the session alone, 1,709 in all by "
        "used_memory (bench results at git e3de2c9).",
        "",
    ]
    return lines


def log_section(http: dict[str, Any]) -> list[str]:
    counts = http["server"].get("log_counts") or {}
    lines = ["## Server log during the HTTP run", ""]
    if not counts:
        return [*lines, "No warning or error.", ""]
    lines += ["Warnings and errors (numbers replaced by N):", ""]
    rows = [[str(count), f"`{message}`"] for message, count in counts.items()]
    return [*lines, *_table(["count", "message"], rows), ""]


def data_section(commands: dict[str, str]) -> list[str]:
    return [
        "## Data",
        "",
        "Every figure above, with the wrk command line that measured it, is in "
        "[results/](results/) as JSON, written by:",
        "",
        "```sh",
        *commands.values(),
        "```",
        "",
    ]


def render(
    *,
    info: dict[str, str],
    started: datetime.datetime,
    elapsed: float,
    command: str,
    private_services: bool,
    commands: dict[str, str],
    sessions: dict[str, Any],
    http: dict[str, Any],
    chart_name: str,
    path: dict[str, Any] | None = None,
) -> str:
    services = (
        "a private redis-server and MongoDB-compatible server started for the run on free "
        "loopback ports (and stopped after it)"
        if private_services
        else "the shared Redis and MongoDB-compatible server"
    )
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} minutes, "
        f"against {services}. One `tornado-auth serve` process (Redis sessions, users in MongoDB, "
        "bcrypt cost 12, access log off); load from `wrk` and Python on the same machine, over "
        "loopback. These are the numbers of this run, whatever they are: a baseline for the "
        "request-path work.",
        "",
        *_table(["", ""], [[key, value] for key, value in info.items()]),
        "",
        "The machine is shared with other work. Each measurement first waits (up to 45 s) for the "
        "machine to be nearly idle and is repeated once if other processes took more than 0.3 "
        "cores while it ran; the CPU cores each measurement's processes used are shown, 'others' "
        "being everything that is not the server, the services or the benchmark itself.",
        "",
        "## Summary",
        "",
        *summary(sessions, http),
        "",
        *overhead_section(http, chart_name),
        *request_path_section(path),
        *login_section(http),
        *storm_section(http),
        *websocket_section(http),
        *sessions_section(sessions),
        *memory_section(sessions),
        *log_section(http),
        *data_section(commands),
    ]
    return "\n".join(lines).rstrip() + "\n"
