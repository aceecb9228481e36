"""``python -m tornado_auth ARGS`` without paying Python's start-up and the package's imports on
every run: this process imports the CLI once, then forks a child for each run it is asked for.

Run as ``python -m tests.forks`` by ``tests.helpers.cli``. One request a line on standard input
(JSON: ``args``, ``env``, ``cwd``, ``stdin``, ``stdout``, ``stderr`` (file paths) and ``timeout``);
one reply a line on standard output: ``{"status": N}`` (as ``Popen.returncode``: negative for a
signal) or ``{"status": null}`` when the run was killed for outliving its timeout.

The child takes the run's working directory, environment and standard streams, then runs the
package as ``python -m`` does (``runpy``, ``__main__``); its exit, traceback and status are the
interpreter's own. Nothing else is imported here, so a child holds what a fresh process would.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import sys

import tornado_auth.cli  # noqa: F401 - the import each run would otherwise repeat


def _become(request: dict) -> None:
    """In the child: the run's directory, environment and streams, then the package's main."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams = ((0, request["stdin"], os.O_RDONLY), (1, request["stdout"], os.O_WRONLY))
    for fd, path, flags in (*streams, (2, request["stderr"], os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.path[0] = request["cwd"]  # where ``python -m`` puts the working directory
    sys.argv = ["-m", *request["args"]]  # runpy sets argv[0] to the module's file, as -m does
    runpy.run_module("tornado_auth", run_name="__main__", alter_sys=True)


def _wait(pid: int, timeout: float) -> int | None:
    """The child's status as ``Popen.returncode``; None if it had to be killed at ``timeout``."""
    exited = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([exited], [], [], timeout)
    finally:
        os.close(exited)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if ready else None


def main() -> None:
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    nowhere = os.open(os.devnull, os.O_RDWR)  # a child's streams are always replaced
    os.dup2(nowhere, 0)
    os.dup2(nowhere, 1)
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            _become(request)
            return  # the package returned without exiting: status 0, as with ``python -m``
        status = _wait(pid, request["timeout"])
        replies.write(json.dumps({"status": status}).encode() + b"\n")
        replies.flush()


if __name__ == "__main__":
    main()
