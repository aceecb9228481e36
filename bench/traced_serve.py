"""``tornado-auth serve`` under tracemalloc, for ``bench.sockets --trace``: the Nth SIGUSR1
writes a snapshot to $BENCH_TRACE_DIR/N.snapshot (after a full garbage collection).

    BENCH_TRACE_FRAMES=30 BENCH_TRACE_DIR=DIR python -m bench.traced_serve serve [options]
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path

from tornado_auth import cli

taken = itertools.count(1)


def snapshot(signum: int, frame: object) -> None:
    gc.collect()
    target = Path(os.environ["BENCH_TRACE_DIR"], f"{next(taken)}.snapshot")
    part = target.with_suffix(".part")
    tracemalloc.take_snapshot().dump(str(part))
    part.rename(target)


if __name__ == "__main__":
    tracemalloc.start(int(os.environ.get("BENCH_TRACE_FRAMES", "30")))
    signal.signal(signal.SIGUSR1, snapshot)
    sys.exit(cli.main(sys.argv[1:]))
