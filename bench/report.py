"""RESULTS.md from the figures in JSON: ``python -m bench.report [DIR]`` (default bench/results):
the key figures with their targets and verdicts, the stores' latencies, chaos, the environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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


def _ms(figures: dict[str, float] | None) -> str:
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
         _ms(everything["from_request_ms"]),
         _verdict(p99 is not None and p99 <= CLOSE_S * 1000 and not everything["missed"])),
        (f"the same, one at a time / in bursts of {params['burst']}", "",
         f"{_ms(revoked['single']['from_request_ms'])} / "
         f"{_ms(revoked['bursts']['from_request_ms'])}", ""),
        ("the same, from the revoke's response", "", _ms(everything["from_response_ms"]), ""),
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
        "cookies (`bench/wrk_report.lua`). Targets from 2,000 sessions: defaults (cache on) "
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
        f"{profile['samples']:,} samples of the event loop's thread.",
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
