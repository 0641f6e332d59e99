#!/usr/bin/env python3
"""Long crash-safety run: the harness of tests/integration/crashlib.py (the
CI test runs 20 cycles of it) for many kill cycles.

  bench/crash_soak.py --velad build/asan/velad --cycles 1000 [--minutes 20] [--seed 1]

Prints one line per cycle and, at the end, the figures (cycles, kills,
acknowledged writes, lost acknowledged writes, violations) as JSON; exits 1
on any violation. Needs numpy and redis-py (tests/requirements.txt).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import crashlib  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--velad", required=True, help="path to the velad binary")
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="data dir and log (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--quiet", action="store_true", help="no per-cycle line")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="vela-crash-")
    t0 = time.monotonic()
    stats = crashlib.run(os.path.abspath(a.velad), work, a.cycles, seed=a.seed,
                         minutes=a.minutes, log=None if a.quiet else
                         (lambda m: print(m, flush=True)))
    out = stats.summary()
    out["seconds"] = round(time.monotonic() - t0, 1)
    out["seed"] = a.seed
    for v in stats.violations[:50]:
        print("VIOLATION:", v)
    print(json.dumps(out, indent=1))
    if stats.violations or a.keep or a.workdir:
        print(f"work dir (data + velad.log): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())
