"""Development services: Redis, MongoDB, a Redis Cluster and a Sentinel group, probed and started.

    python3 tools/services.py up|down|status|cluster-up|cluster-down|sentinel-up|sentinel-down

``scripts/services`` is the documented entry point (its header describes the commands, ports and
environment). Standard library only, so that it runs before any virtualenv exists. The probes
(a real Redis ``PING``, a real MongoDB ``OP_MSG``), ``spawn`` and the starters are shared with the
test fixtures and the benchmarks, which start private instances on ports of their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.probes import (
    HOST,
    ServiceError,
    cluster_answers,
    listening,
    mongo_answers,
    redis_answers,
    redis_command,
    sentinel_answers,
)

REPO = Path(__file__).resolve().parent.parent
FERRETDB_SRC = REPO / "services" / "ferretdb"
WAIT_SECONDS = float(os.environ.get("SERVICES_WAIT_SECONDS", "60"))
FERRETDB_BACKENDS = ("postgresql", "sqlite")


# ---------------------------------------------------------------- processes


def spawn(command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a service in a session of its own (a Ctrl-C or a killed process group of the
    caller leaves it running), its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )


def run(command: Sequence[str], log: Path, **options: Any) -> bool:
    """Run a command to its end, its output appended to ``log``; whether it succeeded."""
    with log.open("ab") as out:
        ran = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **options)
    return ran.returncode == 0


def runs(pid: int, program: str) -> bool:
    """Whether ``pid`` still runs ``program``: a reused pid is someone else's, and an exited
    process that is not reaped yet has no command line."""
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop(pid: int, program: str, seconds: float = 10) -> bool:
    """SIGTERM ``pid`` if it still runs ``program``, SIGKILL after ``seconds``; whether it ran."""
    if not runs(pid, program):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + seconds
        while runs(pid, program) and time.monotonic() < deadline:
            time.sleep(0.05)
        if runs(pid, program):
            say(f"pid {pid} did not stop on SIGTERM within {seconds:g}s; sending SIGKILL", True)
            os.kill(pid, signal.SIGKILL)
    return True


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nothing listens on now, for private instances."""
    ports: set[int] = set()
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            ports.add(probe.getsockname()[1])
    return list(ports)


def tail(log: Path, lines: int = 5) -> str:
    """The last lines of a log, on one line, for an error message."""
    try:
        return " ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(
    ready: Callable[[], bool],
    processes: Sequence[subprocess.Popen[bytes]],
    log: Path,
    what: str,
    seconds: float = WAIT_SECONDS,
) -> None:
    """Poll ``ready`` (a connection error counts as not yet) until it holds; ServiceError if a
    process exits or time runs out first."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError, ServiceError):
            if ready():
                return
        exited = [process for process in processes if process.poll() is not None]
        if exited or time.monotonic() > deadline:
            why = f"process {exited[0].pid} exited" if exited else f"no answer in {seconds:g}s"
            raise ServiceError(f"{what}: {why}; last log lines: {tail(log)}")
        time.sleep(0.1)


@contextlib.contextmanager
def all_or_nothing(processes: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Stop every process started so far when the start of a group fails halfway."""
    try:
        yield
    except BaseException:
        for process in reversed(processes):
            process.kill()
            process.wait()
        raise


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C does, so that a run's private services are stopped."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def say(message: str, error: bool = False) -> None:
    print(f"services: {message}", file=sys.stderr if error else sys.stdout, flush=True)


# ---------------------------------------------------------------- starters


def redis_server(port: int, data: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """A redis-server on ``port`` with its files in ``data``: no persistence unless ``options``
    ask for it (``--appendonly yes``), ready when it returns."""
    command = ["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(data)]
    process = spawn([*command, "--save", "", "--appendonly", "no", *options], log)
    with all_or_nothing([process]):
        wait_until(lambda: redis_answers(port), [process], log, f"redis-server on :{port}")
    return process


def mongodb_server(
    port: int, data: Path, log: Path, backend: str | None = None
) -> subprocess.Popen[bytes]:
    """``mongod`` if it is on PATH, else the FerretDB runner (built on first use) on
    ``backend`` (default ``$FERRETDB_BACKEND``, else PostgreSQL), on ``port`` with its files in
    ``data``; ready when it returns."""
    data.mkdir(parents=True, exist_ok=True)
    if shutil.which("mongod"):
        command = ["mongod", "--dbpath", str(data), "--bind_ip", HOST, "--port", str(port)]
    else:
        backend = ferretdb_backend(backend, log.with_name("apt.log"))
        command = [str(ferretdb_binary(log.with_name("ferretdb-build.log")))]
        command += ["-listen", f"{HOST}:{port}", "-dir", str(data), "-backend", backend]
        if backend == "postgresql":
            command += ["-postgresql-bin", str(postgres_bin()), "-postgresql-user", postgres_user()]
    process = spawn(command, log)
    with all_or_nothing([process]):
        wait_until(
            lambda: mongo_answers(port), [process], log, f"{mongodb_kind(process)} on :{port}"
        )
    return process


def mongodb_kind(process: subprocess.Popen[bytes]) -> str:
    """What a process of ``mongodb_server`` runs: ``mongod``, ``ferretdb-postgresql`` or
    ``ferretdb-sqlite``."""
    args = [str(arg) for arg in process.args]  # type: ignore[union-attr]
    if "-backend" not in args:
        return Path(args[0]).name
    return f"ferretdb-{args[args.index('-backend') + 1]}"


def ferretdb_backend(chosen: str | None, log: Path) -> str:
    """The FerretDB runner's backing store: the one chosen (else ``$FERRETDB_BACKEND``, else
    PostgreSQL). PostgreSQL is installed with apt-get when missing (as root); where it cannot be,
    SQLite stands in with a warning, except under CI or when PostgreSQL was asked for."""
    backend = chosen or os.environ.get("FERRETDB_BACKEND") or ""
    if backend and backend not in FERRETDB_BACKENDS:
        raise ServiceError(f"FERRETDB_BACKEND={backend}: use one of {', '.join(FERRETDB_BACKENDS)}")
    if backend == "sqlite":
        return backend
    try:
        install("postgresql", lambda: postgres_bin() is not None, log)
    except ServiceError as error:
        if backend or os.environ.get("CI"):
            raise
        say(f"mongodb: {error}; FerretDB runs on SQLite instead (slow past 10^3 documents)", True)
        return "sqlite"
    return "postgresql"


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs: that of ``postgres`` on PATH, else the
    newest of Debian's /usr/lib/postgresql/VERSION/bin."""
    if found := shutil.which("postgres"):
        return Path(found).resolve().parent
    versions = Path("/usr/lib/postgresql").glob("*/bin/postgres")
    newest = max(versions, key=lambda path: _version(path.parent.parent.name), default=None)
    return newest.parent if newest else None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def postgres_user() -> str:
    """Who runs PostgreSQL when we are root (it refuses root): ``postgres``, else ``nobody``."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def ferretdb_binary(build_log: Path) -> Path:
    """The FerretDB runner of services/ferretdb, built once per version of its sources into the
    user's cache directory."""
    sources = b"".join(
        (FERRETDB_SRC / name).read_bytes() for name in ("go.mod", "go.sum", "main.go")
    )
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tornado-auth"
    binary = cache / f"ferretdb-{hashlib.sha256(sources).hexdigest()[:16]}"
    if os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise ServiceError("no mongod on PATH and no Go toolchain to build services/ferretdb")
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.tmp.{os.getpid()}")
    say(f"mongodb: building the FerretDB runner (first run only, about a minute; log {build_log})")
    began = time.monotonic()
    # -buildvcs=false: no git lookups (ownership checks in CI clones); GOTOOLCHAIN=local: never
    # download a toolchain
    env = os.environ | {"GOTOOLCHAIN": "local"}
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -buildvcs=false".strip()
    build = [go, "build", "-trimpath", "-o", str(partial), "."]
    if not run(build, build_log, cwd=FERRETDB_SRC, env=env):
        partial.unlink(missing_ok=True)
        raise ServiceError(
            f"go build of services/ferretdb failed (see {build_log}): {tail(build_log)}"
        )
    partial.replace(binary)
    say(f"mongodb: built {binary} in {time.monotonic() - began:.0f}s")
    return binary


def redis_cluster(ports: Sequence[int], data: Path, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Masters on ``ports`` (no replicas) joined into one cluster, ready when it returns; each
    logs to ``logs``/redis-cluster-PORT.log."""
    processes: list[subprocess.Popen[bytes]] = []
    with all_or_nothing(processes):
        for port in ports:
            log = logs / f"redis-cluster-{port}.log"
            options = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            options += ["--cluster-node-timeout", "2000", "--dbfilename", f"dump-{port}.rdb"]
            processes.append(redis_server(port, data, log, *options))
        log = logs / "redis-cluster.log"
        nodes = [f"{HOST}:{port}" for port in ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        if not run([*create, "--cluster-yes"], log):
            raise ServiceError(f"redis-cli --cluster create failed (see {log}): {tail(log, 3)}")
        wait_until(lambda: cluster_answers(ports), processes, log, "redis-cluster")
    return processes


def sentinel_group(
    master: int, replica: int, sentinels: Sequence[int], name: str, data: Path, logs: Path
) -> list[subprocess.Popen[bytes]]:
    """A master, its replica and sentinels watching it (quorum 2, down after 1 s, failover
    timeout 5 s), ready to fail over when it returns; each logs to
    ``logs``/redis-sentinel-PORT.log."""
    processes: list[subprocess.Popen[bytes]] = []
    with all_or_nothing(processes):
        for port in (master, replica, *sentinels):
            # every process has a config file: sentinels rewrite theirs, and a failover sends
            # CONFIG REWRITE to the servers it reconfigures
            lines = [f"port {port}", f"bind {HOST}", f"dir {data}"]
            if port in (master, replica):
                # no 5 s wait before a (diskless) full sync to a new replica
                lines += [f"dbfilename dump-{port}.rdb", 'save ""', "repl-diskless-sync-delay 0"]
                lines += [f"replicaof {HOST} {master}"] if port == replica else []
            else:
                lines += [f"sentinel monitor {name} {HOST} {master} 2"]
                lines += [f"sentinel down-after-milliseconds {name} 1000"]
                lines += [f"sentinel failover-timeout {name} 5000"]
            config = data / f"{port}.conf"
            config.write_text("\n".join(lines) + "\n")
            log = logs / f"redis-sentinel-{port}.log"
            sentinel = ["--sentinel"] if port in sentinels else []
            processes.append(spawn(["redis-server", str(config), *sentinel], log))
            if port == replica:  # sentinels find replicas in the master's INFO: wait for the link
                wait_until(lambda: _linked(replica), processes, log, "the replica's link")
        wait_until(
            lambda: sentinel_answers(sentinels, name), processes, log, "redis-sentinel group"
        )
    return processes


def _linked(replica: int) -> bool:
    return "master_link_status:up" in redis_command(replica, "INFO", "replication")


def install_redis(log: Path) -> None:
    """Debian's redis-server (with redis-cli) when missing: apt-get, as root."""
    install(
        "redis-server",
        lambda: bool(shutil.which("redis-server") and shutil.which("redis-cli")),
        log,
    )


def install(package: str, installed: Callable[[], bool], log: Path) -> None:
    """Debian's ``package`` unless ``installed()`` already holds: apt-get, as root."""
    if installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServiceError(
            f"{package} is not installed (install Debian's {package} package; "
            "automatic install needs root and apt-get)"
        )
    say(f"installing {package} with apt-get")
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y"]
    command += ["--no-install-recommends", package]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    update = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"]
    # a fresh machine has no package lists yet, and old ones may name files gone from the mirror
    fresh = not any(Path("/var/lib/apt/lists").glob("*_Packages*"))
    if fresh and not run(update, log, env=env):
        raise ServiceError(f"apt-get update failed (see {log}): {tail(log, 3)}")
    if not run(command, log, env=env) and not (
        run(update, log, env=env) and run(command, log, env=env)
    ):
        raise ServiceError(f"apt-get install {package} failed (see {log}): {tail(log, 3)}")
    if not installed():
        raise ServiceError(f"apt-get installed {package} but its programs are not found")


# ---------------------------------------------------------------- the command line


def _ports(variable: str, default: str) -> tuple[int, ...]:
    return tuple(int(port) for port in os.environ.get(variable, default).replace(",", " ").split())


@dataclass(frozen=True)
class Service:
    """One service of ``up``: where it answers, how to tell, how to start it."""

    name: str
    ports: tuple[int, ...]
    answers: Callable[[], bool]
    start: Callable[[Path, Path], list[subprocess.Popen[bytes]]]  # (data, state) -> processes
    needs_redis: bool = True
    optional: bool = False  # outside CI, its failure is a warning (its tests skip)

    @property
    def where(self) -> str:
        return f"{HOST}:{','.join(map(str, self.ports))}"


def services() -> dict[str, Service]:
    """The services ``up`` provides, on the ports the environment names."""
    redis, mongo = _ports("REDIS_PORT", "6379"), _ports("MONGO_PORT", "27017")
    cluster = _ports("REDIS_CLUSTER_PORTS", "7000 7001 7002")
    master = _ports("REDIS_SENTINEL_MASTER_PORT", "6390")[0]
    replica = _ports("REDIS_SENTINEL_REPLICA_PORT", "6391")[0]
    sentinels = _ports("REDIS_SENTINEL_PORTS", "26379 26380 26381")
    name = os.environ.get("REDIS_SENTINEL_NAME", "mymaster")
    return {
        "redis": Service(
            "redis", redis, lambda: redis_answers(redis[0]),
            lambda data, state: [redis_server(redis[0], data, state / "redis.log")],
        ),
        "mongodb": Service(
            "mongodb", mongo, lambda: mongo_answers(mongo[0]),
            lambda data, state: [mongodb_server(mongo[0], data, state / "mongodb.log")],
            needs_redis=False,
        ),
        "redis-cluster": Service(
            "redis-cluster", cluster, lambda: cluster_answers(cluster),
            lambda data, state: redis_cluster(cluster, data, state), optional=True,
        ),
        "redis-sentinel": Service(
            "redis-sentinel", (*sentinels,), lambda: sentinel_answers(sentinels, name),
            lambda data, state: sentinel_group(master, replica, sentinels, name, data, state),
            optional=True,
        ),
    }  # fmt: skip


class Records:
    """What ``up`` started, one ``STATE/<service>.state`` file of key=value lines each: the
    program (to recognise its processes), their pids in start order, data dir and log."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def read(self, name: str) -> dict[str, str]:
        path = self.state / f"{name}.state"
        if not path.exists():
            return {}
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def write(self, name: str, **fields: str) -> None:
        partial = self.state / f"{name}.state.tmp"
        partial.write_text("".join(f"{key}={value}\n" for key, value in fields.items()))
        partial.replace(self.state / f"{name}.state")

    def running(self, name: str) -> list[int]:
        """The recorded pids when every one of them still runs its program, else []."""
        record = self.read(name)
        pids, program = [int(pid) for pid in record.get("pid", "").split()], record.get("impl")
        return pids if program and pids and all(runs(pid, program) for pid in pids) else []

    def stop(self, name: str) -> None:
        """Stop the recorded processes (last started first), remove the data dir and record."""
        record = self.read(name)
        for pid in reversed([int(pid) for pid in record.get("pid", "").split()]):
            stopped = bool(record.get("impl")) and stop(pid, record["impl"])
            say(f"{name}: {'stopped' if stopped else 'recorded, but no longer running:'} pid {pid}")
        data = Path(record.get("data", ""))
        if data.name.startswith("tornado-auth-") and data.is_dir():
            shutil.rmtree(data, ignore_errors=True)
        (self.state / f"{name}.state").unlink(missing_ok=True)


def up(service: Service, records: Records) -> None:
    """Reuse what answers, else start it and record what was started; ServiceError if not."""
    if pids := records.running(service.name):
        record = records.read(service.name)
        try:
            wait_until(service.answers, [], Path(record.get("log", "")), service.name)
            say(f"{service.name}: already running on {service.where} (pids {record['pid']})")
            return
        except ServiceError as error:
            say(f"{service.name}: our pids {pids} do not answer ({error}); restarting", True)
    records.stop(service.name)  # a stale record: its data dir goes too
    if service.answers():
        say(f"{service.name}: reusing the server already answering on {service.where}")
        return
    if service.needs_redis:
        install_redis(records.state / "apt.log")
        if service.answers():  # a package install may have started a system instance
            say(f"{service.name}: reusing the server now answering on {service.where}")
            return
    if taken := [port for port in service.ports if listening(port)]:
        raise ServiceError(
            f"port {taken[0]} is taken by a process that is not a ready {service.name}"
        )
    data = Path(tempfile.mkdtemp(prefix=f"tornado-auth-{service.name}."))
    try:
        processes = service.start(data, records.state)
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise
    program = str(processes[0].args[0])  # type: ignore[index]
    started = " ".join(str(process.pid) for process in processes)
    log = records.state / f"{service.name}.log"
    records.write(
        service.name, impl=program, pid=started, port=service.where, data=str(data), log=str(log)
    )
    say(f"{service.name}: started {Path(program).name} on {service.where} (pids {started})")


def status(chosen: dict[str, Service], records: Records) -> int:
    """Print whether each service answers and who started it; 1 if any does not answer."""
    failed = 0
    for service in chosen.values():
        how = "not started by scripts/services"
        if pids := records.running(service.name):
            program = Path(records.read(service.name)["impl"]).name
            how = f"started by scripts/services, {program} pid {' '.join(map(str, pids))}"
        answers = service.answers()
        failed |= not answers
        answer = "answers" if answers else "DOES NOT ANSWER"
        print(f"{service.name:14} {service.where:27} {answer:15} ({how})")
    return failed


@contextlib.contextmanager
def locked(state: Path, seconds: float = 300) -> Iterator[None]:
    """One up/down at a time (the lock's descriptor is not inherited by the services)."""
    with (state / ".lock").open("w") as lock:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"another scripts/services run holds {state}/.lock"
                    ) from None
                time.sleep(0.2)
        yield


COMMANDS = {
    "up": None, "down": None, "status": None,
    "cluster-up": "redis-cluster", "cluster-down": "redis-cluster",
    "sentinel-up": "redis-sentinel", "sentinel-down": "redis-sentinel",
}  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(f"usage: scripts/services {'|'.join(COMMANDS)}", file=sys.stderr)
        return 2
    command, only = argv[0], COMMANDS[argv[0]]
    every = services()
    chosen = {only: every[only]} if only else every
    state = Path(os.environ.get("TORNADO_AUTH_STATE_DIR") or REPO / "var" / "services")
    state.mkdir(parents=True, exist_ok=True)
    (state / ".gitignore").write_text("*\n")  # the state dir stays out of git
    records = Records(state)
    if command == "status":
        return status(chosen, records)
    failed = 0
    with locked(state):
        for service in chosen.values():
            if command.endswith("down"):
                if records.read(service.name):
                    records.stop(service.name)
                else:
                    say(f"{service.name}: nothing started by scripts/services")
                continue
            try:
                up(service, records)
            except ServiceError as error:
                say(f"{service.name} could not be started: {error}", error=True)
                if service.optional and not only and not os.environ.get("CI"):
                    say(
                        f"{service.name}: its tests will skip (CI=true makes this fatal)",
                        error=True,
                    )
                else:
                    failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
