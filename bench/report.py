"""RESULTS.md from the figures in JSON: ``python -m bench.report [DIR]`` (default bench/results):
the key figures with their targets and verdicts, the stores' latencies, chaos, the environment."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tornado_auth.sessions.sqlite import SWEEP_BATCH, SWEEP_STEPS

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
SCENARIOS = {
    "redis": "(a) Redis SIGKILLed, restarted",
    "worker": "(b) a worker SIGKILLed",
    "mongodb": "(c) MongoDB restarted",
    "sentinel": "(d) Sentinel master SIGKILLed",
}


def _load(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    if not path.exists() and name == "chaos":
        path = RESULTS / "chaos.json"  # a quick run may have no chaos figures of its own
    return json.loads(path.read_text()) if path.exists() else None


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _summary(http: dict[str, Any], local: dict[str, Any]) -> list[str]:
    rows = [
        (f"(a) dashboard / healthz req/s at {row['connections']} connection(s)", ">= 0.90",
         f"{row['dashboard']['rps']:,.0f} / {row['healthz']['rps']:,.0f} = {row['ratio']:.2f}",
         _verdict(row["ratio"] >= 0.9))
        for row in http["overhead"]
    ]  # fmt: skip
    login, limit, storm = http["login"], http["bcrypt"]["limit_per_s"], http["storm"]
    alone, during = storm["alone"]["latency_ms"]["p99"], storm["during"]["latency_ms"]["p99"]
    sockets, memory, ends = http["websockets"], local["redis_memory"], local["endpoints"]
    rows += [
        (f"(b) sign-ins/s at bcrypt cost 12 vs the limit {limit:.2f}/s", ">= 90%",
         f"{login['rps']:.2f}/s = {login['of_limit']:.0%}", _verdict(login["of_limit"] >= 0.9)),
        ("(c) dashboard p99 during a 50-connection sign-in storm vs alone", "<= 2x",
         f"{during:.2f} ms vs {alone:.2f} ms = {storm['p99_ratio']:.1f}x",
         _verdict(storm["p99_ratio"] <= 2)),
        (f"(d) server memory per idle WebSocket ({sockets['opened']:,} open, "
         f"{sockets['failures']} failed)", f"<= {SOCKET_KIB} KiB",
         f"{sockets['bytes_per_socket'] / 1024:.1f} KiB",
         _verdict(sockets["bytes_per_socket"] <= SOCKET_KIB * 1024)),
        ("Redis bytes per login session (used_memory growth / MEMORY USAGE)",
         f"reference {memory['reference_bytes']} (connect-redis)",
         f"{memory['info_bytes_per_session']:.0f} / {memory['memory_usage_bytes_per_session']:.0f}",
         ""),
        ("In-process request path: dashboard / healthz, min µs per request",
         "session cost not to grow", f"{ends['dashboard']['min_us']:.1f} / "
         f"{ends['healthz']['min_us']:.1f}: session {local['session_us']:.1f} µs", ""),
    ]  # fmt: skip
    table = ["| measure | target | measured | verdict |", "|---|---|---|---|"]
    return table + [f"| {' | '.join(row)} |" for row in rows]


PEER_TARGETS = {"cache on": 0.9, "cache off": 0.75}  # vs express, from 2,000 sessions up
SOCKET_KIB = 10  # server memory per idle authenticated socket
SOCKETS = 50_000  # idle sockets one process holds, revocation still closing the right one
CLOSE_S = 1.0  # a revoked session's socket closes within this, p99


def _close_ms(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "none closed"
    return f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, max {figures['max']:.1f} ms"


def _sockets(sockets: dict[str, Any]) -> list[str]:
    """Many idle sockets on one process: memory, revocation to close, the dashboard meanwhile."""
    params, opened, memory = sockets["params"], sockets["open"], sockets["memory"]
    revoked, alone, during = sockets["revocations"], sockets["dashboard_alone"], (
        sockets["dashboard_open"])  # fmt: skip
    count, asked, hard = opened["opened"], sockets["requested"], sockets["open_files_hard_limit"]
    limited = (f" of {asked:,} asked: one process may open {hard:,} files here"
               if params["sockets"] < asked else "")  # fmt: skip
    lines = [
        f"`{sockets['command']}` (tornado-auth git {sockets['commit']}): one `tornado-auth serve` "
        f"process, Redis sessions; {count:,} authenticated dashboard sockets opened from "
        f"{sockets['clients']} client processes (each from a loopback address of its own), the "
        f"server's RSS read every {params['step']:,}; then {revoked['all']['revoked']} of their "
        f"sessions, spread over all of them, revoked through `DELETE /api/sessions/{{id}}` by "
        f"another session of their user, {params['single']} one at a time and "
        f"{params['bursts']} bursts of {params['burst']} at once; the time is from the revoke "
        "request to its socket's close frame at the client (from the revoke's response, the "
        "close often comes first: negative). Details: [results/sockets.json]"
        "(results/sockets.json).",
        "",
        "| measure | target | measured | verdict |",
        "|---|---|---|---|",
    ]
    rows = [(f"sockets open on one process{limited}", f"{SOCKETS:,}",
             f"{count:,} ({opened['failed']} failed)", _verdict(count >= SOCKETS))]  # fmt: skip
    labels = {"with_cached_session": "first {sockets:,}, each session cached too",
              "socket_alone": "from {from:,} to {to:,}, past the session cache"}  # fmt: skip
    for key, label in labels.items():
        if key in memory:
            figure = memory[key]
            rows.append((f"server memory per idle socket, {label.format(**figure)}",
                         f"<= {SOCKET_KIB} KiB", f"{figure['bytes_per_socket'] / 1024:.1f} KiB",
                         _verdict(figure["bytes_per_socket"] <= SOCKET_KIB * 1024)))  # fmt: skip
    everything = revoked["all"]
    ping = sockets["settings"].get("TORNADO_AUTH_LIVE__PING_INTERVAL", "20s")
    p99 = everything["from_request_ms"]["p99"] if everything["from_request_ms"] else None
    rows += [
        (f"revoked session to its socket's close, {everything['revoked']} revocations "
         f"({everything['missed']} missed)", f"p99 <= {CLOSE_S:g} s",
         _close_ms(everything["from_request_ms"]),
         _verdict(p99 is not None and p99 <= CLOSE_S * 1000 and not everything["missed"])),
        (f"the same, one at a time / in bursts of {params['burst']}", "",
         f"{_close_ms(revoked['single']['from_request_ms'])} / "
         f"{_close_ms(revoked['bursts']['from_request_ms'])}", ""),
        ("the same, from the revoke's response", "", _close_ms(everything["from_response_ms"]), ""),
        ("sockets closed that were not revoked, or with another code", "0",
         f"{revoked['other_sockets_closed']} / "
         f"{len(revoked['single']['wrong_close']) + len(revoked['bursts']['wrong_close'])}",
         _verdict(revoked["other_sockets_closed"] == 0 and not revoked["single"]["wrong_close"]
                  and not revoked["bursts"]["wrong_close"])),
        ("dashboard (wrk -c10) with the sockets open / with none", "answers",
         f"{during['rps']:,.0f} / {alone['rps']:,.0f} req/s, p99 "
         f"{during['latency_ms']['p99']:.1f} / {alone['latency_ms']['p99']:.1f} ms, non-2xx "
         f"{during['non_2xx']} / {alone['non_2xx']}",
         _verdict(during["requests"] > 0 and during["non_2xx"] == 0)),
        ("opening: sockets per second; server / client processes' CPU (cores)", "",
         f"{opened['per_s']:,.0f}/s; {opened['server_cores']:.2f} / "
         f"{opened['client_cores']:.2f}", ""),
        (f"server CPU with the sockets open and idle (pings every {ping})", "",
         f"{sockets['idle']['server_cores']:.3f} cores", ""),
    ]  # fmt: skip
    return lines + [f"| {' | '.join(row)} |" for row in rows]


def _peers(peers: dict[str, Any]) -> list[str]:
    """The headline: our dashboard against express-session + connect-redis, by sessions."""
    params = peers["params"]
    lines = [
        f"One process each on one Redis; `wrk -t1 -c{params['connections']}`, "
        f"{params['rounds']} rounds of {params['seconds']} s alternating the servers, medians; "
        "with many sessions, each request sends the next of that many distinct signed-in "
        "cookies (`bench/wrk_report.lua`), after one unmeasured pass over all of them (a server "
        "that has run longer than its users' revisit interval has seen them; each server's "
        "caches and Node's JIT warm), with our sessions last seen across the past touch "
        "interval as in a steady state (so a pass is not all touches, nor none). Express "
        "touches its session in Redis on every request (connect-redis `touch`); ours once a "
        "touch interval (60 s). Targets from 2,000 sessions: defaults (cache on) "
        ">= 0.9x express, cache off >= 0.75x, p99 no worse than express's. CPU: the server "
        f"process's own CPU time per answer. Peer: {peers['peer']}. tornado-auth: git "
        f"{peers.get('commit', '?')}.",
        "",
        "| sessions | server | req/s | vs express | p50 ms | p99 ms | CPU µs per answer "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    floor = peers.get("healthz")
    if floor:
        ours, express = floor["cache on"], floor["express"]
        lines[2:2] = [
            f"The floor, `/healthz` (no session) under the same load: express "
            f"{express['rps']:,.0f} req/s, {express['cpu_us']:.0f} µs of CPU per answer; "
            f"tornado-auth {ours['rps']:,.0f} req/s, {ours['cpu_us']:.0f} µs "
            f"({ours['rps'] / express['rps']:.2f}x).",
            "",
        ]
        bare = floor.get("tornado")
        if bare:
            lines[4:4] = [
                f"Tornado alone (`bench/peers/bare_tornado.py`: the dashboard's JSON body, no "
                f"session, cookie, headers or metrics): {bare['rps']:,.0f} req/s, "
                f"{bare['cpu_us']:.0f} µs of CPU per answer ({bare['rps'] / express['rps']:.2f}x "
                "express's `/healthz`).",
                "",
            ]
    for count, row in peers["counts"].items():
        express = row["express"]
        for name, figures in row.items():
            verdict = ""
            if name in PEER_TARGETS and int(count) >= 2000:
                ok = figures["ratio"] >= PEER_TARGETS[name]
                p99 = figures["p99_ms"] <= express["p99_ms"]
                verdict = (f"{_verdict(ok)} ({PEER_TARGETS[name]:g}x), "
                           f"p99 {_verdict(p99)}")  # fmt: skip
            server = "express-session + connect-redis" if name == "express" else (
                f"tornado-auth, {name}")  # fmt: skip
            lines.append(
                f"| {int(count):,} | {server} | {figures['rps']:,.0f} | {figures['ratio']:.2f} "
                f"| {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['cpu_us']:.0f} "
                f"| {verdict} |"
            )
    return lines


def _profile(profile: dict[str, Any]) -> list[str]:
    params = profile["params"]
    lines = [
        f"Where a dashboard request's time goes (`bench/profile.py`): py-spy sampled the server "
        f"(the defaults: cache on) for {params['seconds'] - 2} s while wrk rotated over "
        f"{params['sessions']:,} sessions; {profile['rps']:,.0f} req/s, "
        f"{profile['cpu_us_per_request']:.0f} µs of server CPU per request, "
        f"{profile['samples']:,} samples of the event loop's thread (py-spy stops the process "
        f"for each sample, for whole stacks under uvloop: the figures are a little slower than "
        f"unsampled ones, and the shares are what counts).",
        "",
        "| part of the request | share | µs per request |",
        "|---|---|---|",
    ]
    for part, row in profile["parts"].items():
        lines.append(f"| {part} | {row['share']:.1%} | {row['us']:.1f} |")
    return lines


def _stores(stores: dict[str, Any]) -> list[str]:
    ops = list(next(iter(stores.values())))
    lines = [f"| store | {' | '.join(ops)} |", "|---" * (len(ops) + 1) + "|"]
    for name, row in stores.items():
        cells = " | ".join(f"{row[op]['p50_ms']:.3f}" for op in ops)
        lines.append(f"| {name} | {cells} |")
    return lines


REDIS_BYTES = 400  # Redis memory per signed-in session, its indexes included
KINDS = {"s": "the session (MessagePack)", "ui": "user index buckets",
         "a": "User-Agents stored once", "n": "counts by slice of expiry",
         "names": "the layout's marker (one key)"}  # fmt: skip


def _redis_memory(memory: dict[str, Any]) -> list[str]:
    """Bytes per signed-in session as the store grows, in all and by kind of key."""
    rows = memory["sizes"]
    kinds = sorted({kind for row in rows for kind in row["by_kind"]}, key=list(KINDS).index)
    lines = [
        f"`{memory['command']}` (tornado-auth git {memory['commit']}): sessions made as "
        "sign-ins make them (a distinct user each, an IP address and a browser's User-Agent) on "
        "a private, empty Redis; used_memory growth from before the first, and the sum of MEMORY "
        "USAGE over every key, by kind of key. Target: at most "
        f"{REDIS_BYTES} bytes per session, its indexes included (connect-redis: "
        f"{memory['reference_bytes']}). Details: [results/redis_memory.json]"
        "(results/redis_memory.json).",
        "",
        "| sessions | used_memory growth, B/session | MEMORY USAGE, B/session | "
        + " | ".join(f"{KINDS.get(k, k)} (`{k}`): keys, B/session" for k in kinds)
        + " | verdict |",
        "|---" * (4 + len(kinds)) + "|",
    ]
    for row in rows:
        used, usage = row["used_memory_bytes_per_session"], row["memory_usage_bytes_per_session"]
        by_kind = [row["by_kind"].get(k, {"keys": 0, "bytes_per_session": 0}) for k in kinds]
        verdict = (f"MEMORY USAGE {_verdict(usage <= REDIS_BYTES)}, used_memory "
                   f"{_verdict(used <= REDIS_BYTES)}")  # fmt: skip
        cells = [f"{row['sessions']:,}", f"{used:,.1f}", f"{usage:,.1f}",
                 *(f"{k['keys']:,}, {k['bytes_per_session']:,.1f}" for k in by_kind),
                 verdict if row["sessions"] >= 1_000_000 else ""]  # fmt: skip
        lines.append(f"| {' | '.join(cells)} |")
    return [
        *lines,
        "",
        "The target is for a million sessions, where the verdict is read: below that, used_memory"
        " growth is dominated by what does not grow with the sessions (Redis's own tables sized "
        "for what is to come, the first keys' allocations, the filler's client buffers: 5.7 MB, "
        "57 bytes a session at 10^5). Sessions are named by the 32 bytes of their SHA-256 (48 "
        "bytes of key allocation instead of 64, index members 11 bytes shorter); before that "
        "layout (git 5dcaf06): 490.3 / 356.7 B at 10^5 and 402.5 / 330.9 B at 10^6. used_memory "
        "also holds what MEMORY USAGE leaves out: the expiry table's entry of each session, the "
        "slots of Redis's key tables (which double in size: past 2^20 keys, as at 10^6 sessions "
        "plus 65,536 index buckets, the main table has 2^21 slots, 16.8 bytes a session) and the "
        "filler's client buffers (`clients_bytes`, from runs that record it).",
    ]


def _processes(processes: dict[str, Any]) -> list[str]:
    """Throughput with one and two processes, direct and through nginx, and who used the CPU."""
    params = processes["params"]
    lines = [
        f"`{processes['command']}` (tornado-auth git {processes['commit']}), "
        f"{processes['cores']} cores: the dashboard under `wrk -t2 -c{params['connections']}` "
        f"rotating over {params['sessions']:,} signed-in sessions, {params['rounds']} rounds of "
        f"{params['seconds']} s, medians; cores: CPU time over wall time of the servers (every "
        "process), nginx (master and workers), wrk, and the whole machine. nginx from "
        "`deploy/nginx.conf.template`, in front of single-process servers. Details: "
        "[results/processes.json](results/processes.json).",
        "",
        "| setup | req/s | vs one process | p50 ms | p99 ms | cores: servers | nginx | wrk | "
        "machine | server CPU µs per answer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in processes["setups"].items():
        cores = row["cores"]
        lines.append(
            f"| {name} | {row['rps']:,.0f} | {row['vs_one_process']:.2f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {cores['servers']:.2f} | {cores['nginx']:.2f} | "
            f"{cores['wrk']:.2f} | {cores['machine']:.2f} | {row['server_cpu_us']:.0f} |"
        )
    return lines


MONGO_MS = 3.0  # MongoDB session store at 10^5 sessions: touch and load p50
MONGO_OPS = ("load", "touch", "save", "create", "delete", "list_user", "delete_user", "trim_user",
             "user_get", "user_by_email", "count")  # fmt: skip


def _mongo_scale(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The MongoDB stores by backing store of the test server: p50 by size, and the plans."""
    lines = [
        "The MongoDB session and user stores alone (`bench/mongo_scale.py`), one call at a time, "
        "four sessions per user, on the test server's two backing stores: FerretDB on PostgreSQL "
        "(what `scripts/services` starts when no `mongod` is present) and on SQLite. p50 ms; "
        f"target: load and touch under {MONGO_MS:g} ms with 10^5 sessions. Each query's plan is "
        "recorded with the figures (FerretDB's pushdown and its backend's plan).",
        "",
        "| backing store | sessions | " + " | ".join(MONGO_OPS) + " | verdict |",
        "|---" * (len(MONGO_OPS) + 3) + "|",
    ]
    plans = []
    for backend, run in runs.items():
        for size, row in run["sizes"].items():
            ops = row["ops"]
            cells = [f"{ops[op]['p50_ms']:,.2f}" if op in ops else "" for op in MONGO_OPS]
            verdict = ""
            if int(size) >= 100_000:
                worst = max(ops["load"]["p50_ms"], ops["touch"]["p50_ms"])
                verdict = _verdict(worst < MONGO_MS)
            lines.append(f"| {backend} | {int(size):,} | {' | '.join(cells)} | {verdict} |")
        biggest = run["sizes"][max(run["sizes"], key=int)]
        scans = sorted(op for op, found in biggest.get("plans", {}).items()
                       if any(not plan.get("pushdown") for plan in found))  # fmt: skip
        plans.append(f"{backend} ({run['date']}, `{run['command']}`): "
                     + (f"not pushed down to the backend: {', '.join(scans)}" if scans
                        else "every query pushed down"))  # fmt: skip
    return [
        *lines,
        "",
        *(f"- {line}" for line in plans),
        "",
        "On SQLite FerretDB pushes down no filter but `_id`, so every per-user query reads the "
        "whole collection: the cost grows with the test server, not with our queries. On "
        "PostgreSQL each of the request path's queries runs on an index (the plans in "
        "[results/mongo_scale-postgresql.json](results/mongo_scale-postgresql.json)); the "
        "live-session count, which the metrics take every 5 s away from the request path (less "
        "often where it takes long: at most a tenth of the time), is a sequential scan on "
        "FerretDB, which compares no range in its backend (a `mongod` answers it from the "
        "`expires_at` index alone, the only field the count and the sweep filter by since git "
        "121bb7f; the plans above were recorded before, with the same scan). FerretDB "
        "v1.24 also reads every document of a find that has a filter or a sort, and sorts in "
        "memory (no limit pushdown then: `internal/handler/msg_find.go`), so the admin's pages "
        "of users and of the audit trail grow with the collection on it (the cost-against-size "
        "tables below: about 2 s a page at 10^4, past the 3 s timeout at 10^5); a `mongod` reads "
        "them from the `created_at` and `(at, _id)` indexes the stores create.",
    ]


def _chaos(chaos: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | responses | 200 | 503 | other | 500s | sessions before / lost "
        "| down s | recovery s | slowest s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in chaos["scenarios"].items():
        ok, down = (sum(n for key, n in row["by_status"].items() if key.endswith(f" {code}"))
                    for code in (200, 503))  # fmt: skip
        lines.append(
            f"| {SCENARIOS[name]} | {row['responses']} | {ok} | {down} "
            f"| {row['responses'] - ok - down} | **{row['500s']}** | "
            f"{row['sessions_before_fault']} / **{row['sessions_lost']}** | {row['down_s']} "
            f"| {row['recovery_s']} | {row['slowest_s']} |"
        )
    return lines


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _panel(
    x0: int, title: str, unit: str, series: list[tuple[str, list[tuple[float, float]]]]
) -> list[str]:
    """One small line chart, 300 x 180, at ``x0``: series of (minute, value)."""
    width, height, left, top = 300, 180, 44, 24
    points = [point for _, values in series for point in values]
    if not points:
        return []
    x_max = max(x for x, _ in points) or 1.0
    y_max = max(y for _, y in points) * 1.1 or 1.0
    plot_w, plot_h = width - left - 10, height - top - 28

    def at(x: float, y: float) -> str:
        return f"{x0 + left + plot_w * x / x_max:.1f},{top + plot_h * (1 - y / y_max):.1f}"

    parts = [
        f'<text x="{x0 + left}" y="14" font-size="12">{title}</text>',
        f'<line x1="{x0 + left}" y1="{top + plot_h}" x2="{x0 + left + plot_w}" '
        f'y2="{top + plot_h}" stroke="#888"/>',
        f'<line x1="{x0 + left}" y1="{top}" x2="{x0 + left}" y2="{top + plot_h}" stroke="#888"/>',
        f'<text x="{x0 + left - 4}" y="{top + 4}" font-size="10" text-anchor="end">'
        f"{y_max:.0f}</text>",
        f'<text x="{x0 + left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>',
        f'<text x="{x0 + left + plot_w}" y="{top + plot_h + 14}" font-size="10" '
        f'text-anchor="end">{x_max:.0f} min</text>',
        f'<text x="{x0 + 4}" y="{top + plot_h / 2}" font-size="10">{unit}</text>',
    ]
    for index, (label, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        line = " ".join(at(x, y) for x, y in values)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>'
        )
        parts.append(
            f'<text x="{x0 + left + 4 + 90 * index}" y="{height - 2}" font-size="10" '
            f'fill="{colour}">{label}</text>'
        )
    return parts


def soak_chart(soak: dict[str, Any]) -> str:
    """A small SVG: each process's RSS, and the p99 of each minute, over the run."""
    samples = soak["samples"]
    start = samples[0]["at"]
    minutes = [(row["at"] - start) / 60 for row in samples]
    roles: dict[int, str] = {}
    rss: dict[int, list[tuple[float, float]]] = {}
    for minute, row in zip(minutes, samples, strict=True):
        ordered = sorted(row["processes"].values(), key=lambda p: p["role"] != "supervisor")
        for position, process in enumerate(ordered):
            roles[position] = "supervisor" if position == 0 else f"worker {position}"
            rss.setdefault(position, []).append((minute, process["rss_kib"] / 1024))
    p99 = [(m, row["p99_ms"]) for m, row in zip(minutes, samples, strict=True) if row["p99_ms"]]
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="620" height="180" '
        'font-family="sans-serif">',
        *_panel(0, "RSS per process", "MiB", [(roles[k], v) for k, v in sorted(rss.items())]),
        *_panel(310, "p99 of each minute", "ms", [("p99", p99)]),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


# -- cost against size (bench/scale.py) ---------------------------------------------------------

STORE_COLOURS = {"memory": "#2ca02c", "sqlite": "#1f77b4", "redis": "#d62728",
                 "mongodb": "#9467bd"}  # fmt: skip
# (title, where the figure is in a size's row) for each panel of the chart
SCALE_PANELS = (
    ("dashboard req/s (wrk)", ("wrk", "rps")),
    ("dashboard p99 ms (wrk)", ("wrk", "p99_ms")),
    ("sign-in p50 ms", ("ops", "signin", "p50_ms")),
    ("logout p50 ms", ("ops", "logout", "p50_ms")),
    ("revoke-others p50 ms", ("ops", "revoke_others", "p50_ms")),
    ("list-sessions p50 ms", ("ops", "list_sessions", "p50_ms")),
    ("sweep run, 1,000 expired, ms", ("store", "sweep_expired_ms")),
    ("live count ms (every 5 s)", ("store", "count_ms")),
)
AUDIT_PANELS = (
    ("audit: last page by number, ms", ("page_last", "p50_ms")),
    ("audit: middle page by cursor, ms", ("cursor_middle", "p50_ms")),
)


def _dig(row: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = row
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _log_panel(
    x0: float, y0: float, title: str, series: dict[str, list[tuple[float, float]]], x_label: str
) -> list[str]:
    """One small log-log line chart, 300 x 190, at (x0, y0): per series, (count, value)."""
    width, height, left, top, bottom = 300, 190, 46, 20, 34
    plot_w, plot_h = width - left - 12, height - top - bottom
    points = [point for values in series.values() for point in values]
    parts = [f'<text x="{x0 + left}" y="{y0 + 13}" font-size="12">{title}</text>']
    if not points:
        missing = f'<text x="{x0 + left}" y="{y0 + 60}" font-size="10">not measured</text>'
        return [*parts, missing]
    xs = [math.log10(x) for x, _ in points]
    ys = [math.log10(y) for _, y in points]
    x_lo, x_hi = math.floor(min(xs)), max(math.ceil(max(xs)), math.floor(min(xs)) + 1)
    y_lo, y_hi = math.floor(min(ys)), max(math.ceil(max(ys)), math.floor(min(ys)) + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        px = x0 + left + plot_w * (math.log10(x) - x_lo) / (x_hi - x_lo)
        py = y0 + top + plot_h * (1 - (math.log10(y) - y_lo) / (y_hi - y_lo))
        return px, py

    base = y0 + top + plot_h
    parts += [
        f'<rect x="{x0 + left}" y="{y0 + top}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#888"/>'
    ]
    for decade in range(x_lo, x_hi + 1):
        px = x0 + left + plot_w * (decade - x_lo) / (x_hi - x_lo)
        parts.append(f'<line x1="{px:.1f}" y1="{y0 + top}" x2="{px:.1f}" y2="{base}" '
                     'stroke="#ddd"/>')  # fmt: skip
        parts.append(f'<text x="{px:.1f}" y="{base + 12}" font-size="9" text-anchor="middle">'
                     f"10^{decade}</text>")  # fmt: skip
    for decade in range(y_lo, y_hi + 1):
        py = y0 + top + plot_h * (1 - (decade - y_lo) / (y_hi - y_lo))
        parts.append(f'<line x1="{x0 + left}" y1="{py:.1f}" x2="{x0 + left + plot_w}" '
                     f'y2="{py:.1f}" stroke="#ddd"/>')  # fmt: skip
        parts.append(f'<text x="{x0 + left - 3}" y="{py + 3:.1f}" font-size="9" '
                     f'text-anchor="end">{10.0**decade:g}</text>')  # fmt: skip
    parts.append(f'<text x="{x0 + left + plot_w}" y="{base + 24}" font-size="9" '
                 f'text-anchor="end">{x_label}</text>')  # fmt: skip
    for name, values in series.items():
        if not values:
            continue
        colour = STORE_COLOURS.get(name, "#333")
        line = " ".join("{:.1f},{:.1f}".format(*at(x, y)) for x, y in sorted(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{line}"/>')  # fmt: skip
        for x, y in values:
            px, py = at(x, y)
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2" fill="{colour}"/>')
    return parts


def scale_chart(scale: dict[str, Any]) -> str:
    """An SVG: each store's figures against the sessions stored (log-log), and the audit pages
    against the entries."""
    panels: list[tuple[str, dict[str, list[tuple[float, float]]], str]] = []
    for title, path in SCALE_PANELS:
        series = {
            name: [(float(size), value) for size, row in store.get("sizes", {}).items()
                   if (value := _dig(row, path)) is not None]
            for name, store in scale.get("stores", {}).items()
        }  # fmt: skip
        panels.append((title, series, "sessions stored"))
    for title, path in AUDIT_PANELS:
        series = {
            name: [(float(size), value) for size, row in users.get("audit", {}).items()
                   if (value := _dig(row, path)) is not None]
            for name, users in scale.get("users", {}).items()
        }  # fmt: skip
        panels.append((title, series, "audit entries"))
    columns, width, height = 5, 310, 200
    rows = -(-len(panels) // columns)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * width}" '
        f'height="{rows * height + 24}" font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for index, (title, series, x_label) in enumerate(panels):
        row, column = divmod(index, columns)
        parts += _log_panel(column * width, row * height, title, series, x_label)
    for index, (name, colour) in enumerate(STORE_COLOURS.items()):
        parts.append(f'<text x="{46 + 90 * index}" y="{rows * height + 16}" font-size="11" '
                     f'fill="{colour}">{name}</text>')  # fmt: skip
    return "\n".join([*parts, "</svg>"]) + "\n"


def _ms(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    return f"{figures['p50_ms']:.2f} / {figures['p99_ms']:.2f}"


def _growth(rows: dict[str, dict[str, Any]], path: tuple[str, ...]) -> str:
    """The figure at the largest size over the one at the smallest: x1.3."""
    values = [(int(size), _dig(row, path)) for size, row in rows.items()]
    found = [(size, value) for size, value in values if value is not None]
    if len(found) < 2:
        return "-"
    (_, first), (_, last) = min(found), max(found)
    ratio = last / first
    shown = f"x{ratio:.1f}"
    return f"**{shown}**" if ratio > 2 else shown


def _provenance(scale: dict[str, Any]) -> str:
    """Which command measured which stores (and sizes, where a store's rows come from more than
    one run: ``--merge``), when, at which commit."""
    runs: dict[tuple[str, str, str], list[str]] = {}

    def key(run: dict[str, Any]) -> tuple[str, str, str]:
        return run["command"], run.get("started", run["date"]), run["commit"]

    for group, kind in (("stores", "sessions"), ("users", "users")):
        for name, part in scale.get(group, {}).items():
            run = part.get("run", scale)
            rows = part.get("sizes", {}) if group == "stores" else {}
            by_run: dict[tuple[str, str, str], list[str]] = {}
            for size, row in rows.items():
                by_run.setdefault(key(row.get("run", run)), []).append(f"{int(size):,}")
            if len(by_run) < 2:
                runs.setdefault(key(run), []).append(f"{name} {kind}")
                continue
            for found, sizes in by_run.items():
                runs.setdefault(found, []).append(f"{name} {kind} at {', '.join(sizes)}")
    return "; ".join(
        f"`{command}` started {date} (tornado-auth git {commit}: {', '.join(names)})"
        for (command, date, commit), names in runs.items()
    )


def _scale(scale: dict[str, Any]) -> list[str]:
    params = scale["params"]
    stores, users = scale.get("stores", {}), scale.get("users", {})
    lines = [
        f"Generated by {_provenance(scale)}; private Redis and MongoDB-compatible servers "
        "started for each run. Every store is filled through the SessionStore API (`create`, "
        "many calls at once) with what sign-ins of distinct users store (e-mail, role, "
        "sign-in method, a desktop or phone browser's User-Agent, an address), then measured "
        "at each size:",
        "",
        f"- dashboard: `wrk -t1 -c{params['connections']}` against one `tornado-auth serve` "
        "process on the store, each request the next of up to "
        f"{params['cookies']:,} stored sessions picked at random; the session cache off and "
        "touches 12 h apart, so that each request is one read of the store; median of "
        f"{params['rounds']} rounds of {params['seconds']:g} s. The memory store keeps its "
        "records in one process, so its dashboard is measured in process only "
        "(`in-process dashboard`: handed to the application without a socket).",
        f"- the other operations: in process, one call at a time through the services an app "
        f"runs on, p50 / p99 ms of up to {params['ops']} calls (fewer where they took more "
        f"than {params['op_seconds']:g} s in all) on sessions picked at random: sign-in is the "
        "store part (the new record, its index entries and the per-user cap; no bcrypt), "
        "logout loads and deletes a session, revoke-others ends the 2 other sessions of a "
        "user signed in 3 times, list-sessions lists one user's sessions, touch moves one "
        "session's expiry.",
        "- sweep: one run of the store's sweep with nothing expired, and with 1,000 expired "
        "records (SQLite: the 4 KiB "
        "pages its statements read / wrote through system calls, from the OS page cache or the "
        "disk, the write-ahead log included); count: the count of live sessions the metrics "
        "take every 5 s (on the store's connection).",
        "",
        "| store | sessions | dashboard req/s | dashboard p50 / p99 ms | in-process dashboard "
        "| sign-in | logout | revoke-others | list-sessions | touch | sweep ms: none / 1,000 "
        "expired (SQLite pages read / written) | count ms | time: filling (rate) / measuring |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, store in stores.items():
        for size, row in store.get("sizes", {}).items():
            ops, wrk, kept = row["ops"], row.get("wrk"), row["store"]
            io = kept.get("sweep_expired_io_kib")
            sweep = f"{kept['sweep_idle_ms']:.2f} / {kept['sweep_expired_ms']:.1f}" + (
                f" ({io['read'] // 4:,} / {io['written'] // 4:,})" if io else ""
            )
            rps = f"{wrk['rps']:,.0f}" if wrk else "-"
            latency = f"{wrk['p50_ms']:.2f} / {wrk['p99_ms']:.2f}" if wrk else "-"
            lines.append(
                f"| {name} | {int(size):,} | {rps} | {latency} | "
                f"{_ms(ops['dashboard'])} | {_ms(ops['signin'])} | {_ms(ops['logout'])} | "
                f"{_ms(ops['revoke_others'])} | {_ms(ops['list_sessions'])} | "
                f"{_ms(ops['touch'])} | {sweep} | {kept['count_ms']:.2f} | "
                f"{row['fill']['seconds']:,.0f} s ({row['fill']['per_s'] or 0:,}/s) / "
                f"{row['measure_s']:,.0f} s |"
            )
    full_runs = [
        (name, int(size), row["store"]["sweep_full_run"])
        for name, store in stores.items()
        for size, row in store.get("sizes", {}).items()
        if "sweep_full_run" in row["store"]
    ]
    if full_runs:
        lines += [
            "",
            "SQLite's sweep, bounded per run: a run removes at most "
            f"{full_runs[0][2]['removed']:,} expired records ({SWEEP_STEPS} statements of "
            f"{SWEEP_BATCH:,}, requests "
            "running between them) and leaves the rest to the next run. One run with "
            f"{full_runs[0][2]['expired']:,} expired at each size. The sweep is not on the "
            "request path: its growth in the table below is the cost of each removed record, "
            "one changed leaf page of each of the table's B-trees (the rows, and the indexes by "
            "key, by user and by end): at 10^3 sessions the records removed share a few pages, "
            "from about 10^5 each has pages of its own, and the pages per record stop growing "
            "once none are shared.",
            "",
            "| store | sessions | removed (left for the next run) | ms | pages read / written "
            "| pages read / written per record |",
            "|---|---|---|---|---|---|",
        ]
        for name, size, run in full_runs:
            removed = max(run["removed"], 1)
            lines.append(
                f"| {name} | {size:,} | {run['removed']:,} ({run['rest_next_run']:,}) | "
                f"{run['ms']:,.0f} | {run['pages_read']:,} / {run['pages_written']:,} | "
                f"{run['pages_read'] / removed:.1f} / {run['pages_written'] / removed:.1f} |"
            )
    growth = [
        ("dashboard req/s", ("wrk", "rps")),
        ("dashboard p50", ("wrk", "p50_ms")),
        ("dashboard p99", ("wrk", "p99_ms")),
        ("in-process dashboard", ("ops", "dashboard", "p50_ms")),
        *[
            (op.replace("_", "-"), ("ops", op, "p50_ms"))
            for op in ("signin", "logout", "revoke_others", "list_sessions", "touch")
        ],
        ("sweep", ("store", "sweep_expired_ms")),
        ("count", ("store", "count_ms")),
    ]
    lines += [
        "",
        "Growth, the figure (p50 for latencies) at the largest size measured over the one at "
        "the smallest (bold past x2; the machine is shared, so single figures move by tens of "
        "per cent between runs):",
        "",
        f"| store | sizes | {' | '.join(label for label, _ in growth)} |",
        "|---" * (len(growth) + 2) + "|",
    ]
    for name, store in stores.items():
        sizes = [int(size) for size in store.get("sizes", {})]
        if sizes:
            cells = " | ".join(_growth(store["sizes"], path) for _, path in growth)
            lines.append(f"| {name} | {min(sizes):,} to {max(sizes):,} | {cells} |")
    lines += [
        "",
        f"A user with 1,000 sessions (`sessions.max_per_user` {1000}), measured at each size: "
        "list-sessions, sign-in (which ends the oldest, at the cap) and revoke-others (999 "
        "ended), p50 / p99 ms.",
        "",
        "| store | sessions stored | list-sessions | sign-in | revoke-others |",
        "|---|---|---|---|---|",
    ]
    for name, store in stores.items():
        for size, row in store.get("sizes", {}).items():
            heavy = row["heavy_user"]
            lines.append(
                f"| {name} | {int(size):,} | {_ms(heavy['list_sessions'])} | "
                f"{_ms(heavy['signin'])} | {_ms(heavy['revoke_others'])} |"
            )
    if users:
        lines += [
            "",
            "Users stores (in process, p50 / p99 ms): the users-store part of a sign-in (by "
            "e-mail, the sign-in time written, the re-check, its audit entry; no bcrypt), the "
            "look-up by e-mail alone, and the admin's user list by page number (50 a page).",
            "",
            "| users store | users | look-up by e-mail | sign-in | user list: first page | "
            "middle page | last page |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, part in users.items():
            for size, row in part.get("users", {}).items():
                lines.append(
                    f"| {name} | {int(size):,} | {_ms(row['by_email'])} | {_ms(row['signin'])} "
                    f"| {_ms(row['page_first'])} | {_ms(row['page_middle'])} | "
                    f"{_ms(row['page_last'])} |"
                )
        lines += [
            "",
            "The admin's audit trail (`GET /api/admin/audit`, 50 entries a page, in process, p50 "
            "/ p99 ms): by page number (`?page=`, with the total) and by cursor (`?before=` "
            "the newest page, a page from the middle, `?after=` the oldest page), and appending "
            "one entry.",
            "",
            "| users store | entries | by number: first | middle | last | by cursor: newest | "
            "middle | oldest | append |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, part in users.items():
            for size, row in part.get("audit", {}).items():
                cells = " | ".join(_ms(row.get(key)) for key in (
                    "page_first", "page_middle", "page_last", "cursor_first", "cursor_middle",
                    "cursor_last", "record"))  # fmt: skip
                lines.append(f"| {name} | {int(size):,} | {cells} |")
    notes = [
        f"{name}: {note}"
        for group in (stores, users)
        for name, part in group.items()
        for note in part.get("notes", [])
    ]
    minutes = [
        f"{name} {part['minutes']:.0f} min (filling {part['fill_minutes']:.0f})"
        for name, part in stores.items()
        if "minutes" in part
    ]
    lines += [
        "",
        "Time taken by the last run of each store: " + ", ".join(minutes) + "." if minutes else "",
    ]
    if notes:
        lines += ["", "Not measured:", "", *[f"- {note}" for note in notes]]
    lines += [
        "",
        "![Figures against the number of stored sessions and audit entries, log-log]"
        "(results/scale.svg)",
        "",
        "Environment: " + "; ".join(f"{k} {v}" for k, v in scale["environment"].items()) + ".",
    ]
    return lines


def _soak(soak: dict[str, Any]) -> list[str]:
    summary, params = soak["summary"], soak["params"]
    lines = [
        "| process | RSS at start / end (MiB) | open files at start / end |",
        "|---|---|---|",
    ]
    for index, process in enumerate(summary["processes"]):
        name = process["role"] if process["role"] == "supervisor" else f"worker {index}"
        start, end = (kib / 1024 for kib in process["rss_kib"])
        lines.append(
            f"| {name} | {start:.1f} / {end:.1f} | {process['open_files'][0]} / "
            f"{process['open_files'][1]} |"
        )
    lines += [
        "",
        f"{summary['requests']:,.0f} requests from {params['users']} Locust users over "
        f"{summary['minutes']} min; p99 of a minute: median {summary['p99_ms_median']} ms, worst "
        f"{summary['p99_ms_max']} ms; connections at most: Redis "
        f"{summary['redis_connections_max']}, MongoDB {summary['mongodb_connections_max']}.",
        "",
        "![RSS per process and p99 of each minute](results/soak.svg)",
    ]
    return lines


def render(directory: Path = RESULTS) -> str:
    run, http, local = (_load(directory, name) for name in ("run", "http_load", "in_process"))
    chaos = _load(directory, "chaos")
    soak = _load(directory, "soak")
    sockets = _load(directory, "sockets")
    peers, profile = _load(directory, "peers"), _load(directory, "profile")
    lines = ["# Benchmark results", ""]
    if run and peers:
        lines += [
            "## The dashboard beside the Express guide's stack "
            f"(`make bench`, {peers.get('date', run['started'])})",
            "",
            *_peers(peers),
            "",
        ]
    if run and profile:
        lines += [*_profile(profile), ""]
    if run and (peers or profile):
        lines += ["## Everything else (`make bench`)", ""]
    if run and http and local:
        lines += [
            f"Generated by `{run['command']}` on {run['started']} ({run['minutes']:.0f} min): one "
            "`tornado-auth serve` process, Redis sessions, MongoDB users, bcrypt cost 12, load "
            "from wrk on loopback. Figures and exact commands: [results/](results/) (`python -m "
            "bench.report` writes this file again from them).",
            "",
            *_summary(http, local),
            "",
            "Session stores, p50 ms of one call at a time (`*_full`: again on the store the "
            "creates filled):",
            "",
            *_stores(local["stores"]),
            "",
            "Environment: " + "; ".join(f"{k} {v}" for k, v in run["environment"].items()) + ".",
        ]
    else:
        lines += ["Generated by `make bench` (figures in [results/](results/)): not measured yet."]
    if sockets:
        lines += ["", f"## Idle sockets on one process (`make bench`, {sockets['date']})", "",
                  *_sockets(sockets)]  # fmt: skip
    memory = _load(directory, "redis_memory")
    if memory:
        lines += ["", f"## Redis memory per signed-in session (`make bench`, "
                  f"{memory.get('date', '?')})", "", *_redis_memory(memory)]  # fmt: skip
    mongo = {name: run for name in ("postgresql", "sqlite")
             if (run := _load(directory, f"mongo_scale-{name}"))}  # fmt: skip
    if mongo:
        lines += ["", "## MongoDB stores at scale (`bench/mongo_scale.py`)", "",
                  *_mongo_scale(mongo)]  # fmt: skip
    processes = _load(directory, "processes")
    if processes:
        lines += ["", f"## One process or two, direct or through nginx (`make bench`, "
                  f"{processes['date']})", "", *_processes(processes)]  # fmt: skip
    if chaos:
        lines += [
            "",
            f"## Chaos (`make chaos`, {chaos['date']})",
            "",
            f"`tornado-auth serve --processes 2`, {chaos['params']['rate']:g} requests/s of "
            "signed-in traffic; lost: sessions acknowledged before the fault that no longer reach "
            "the dashboard after it. Details: [results/chaos.json](results/chaos.json).",
            "",
            *_chaos(chaos),
        ]
    scale = _load(directory, "scale")
    if scale:
        lines += [
            "",
            f"## Cost against size (`make bench-scale`, {scale['date']})",
            "",
            *_scale(scale),
        ]
    if soak:
        lines += [
            "",
            f"## Soak (`make soak`, {soak['date']})",
            "",
            f"`{soak['command']}`: the Locust scenario (`loadtest/locustfile.py`) against "
            "`tornado-auth serve --processes 2`, Redis sessions, MongoDB users, sampled every "
            f"{soak['params']['interval_s']:.0f} s. Details: "
            "[results/soak.json](results/soak.json).",
            "",
            *_soak(soak),
        ]
    return "\n".join(lines) + "\n"


def write(directory: Path = RESULTS) -> Path:
    """RESULTS.md: bench/RESULTS.md for bench/results/, else next to the figures."""
    target = BENCH / "RESULTS.md" if directory == RESULTS else directory / "RESULTS.md"
    target.write_text(render(directory))
    return target


if __name__ == "__main__":
    print(f"wrote {write(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else RESULTS)}")
