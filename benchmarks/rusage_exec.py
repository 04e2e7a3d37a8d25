"""Run a command and report its true peak RSS: ``python rusage_exec.py OUT -- ARGV...``.

Linux folds the pre-exec memory of a forked child (a copy of its parent) into
the child's ``ru_maxrss``, so a child started straight from the big benchmark
process would report at least the benchmark's own size. This launcher is a
bare interpreter (about 10 MB): the command it starts can only inherit that
much, well under any Python process that imports a database driver. Writes
``{"returncode", "wall", "maxrss_kb"}`` to OUT; the command's stdin, stdout
and stderr are its own.
"""

import json
import os
import sys
import time


def main() -> int:
    out, sep, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    assert sep == "--" and argv
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as fh:
        json.dump({"returncode": code, "wall": wall, "maxrss_kb": usage.ru_maxrss}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
