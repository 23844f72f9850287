"""Run a command; write its wall time, peak RSS and CPU time, its own, to a JSON file.

    python -m bench.timed RESULT.json COMMAND [ARGS...]

The benchmark's process is large (every expected object in memory): a command forked
from it would inherit its high-water RSS mark, so this small process forks it instead.
Exits with the command's exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    result, command = Path(argv[0]), argv[1:]
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    figures = {
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    result.write_text(json.dumps(figures))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
