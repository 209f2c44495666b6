"""Instructions per event, pipeline vs bare River, counted by valgrind (repeatable on a busy box).

    python -m bench.instructions [--events 20000]

Wall-clock rows drift by ±15% on a shared machine; instruction counts do not. Each mode runs in
its own `valgrind --tool=cachegrind` process after the same imports and set-up; the set-up-only
run is subtracted. Needs Debian's `valgrind`; takes a minute or two. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

MODES = ("setup", "bare", "pipeline")


def work(mode: str, n_events: int) -> None:
    """What one valgrind process runs: the imports and set-up, then `mode`'s loop."""
    from river import reco

    from bench.common import load_events, ml100k_path
    from bench.throughput import mf_params
    from streamrec.core.pipeline import Pipeline
    from streamrec.io.file_source import from_values
    from streamrec.obs.metrics import Metrics
    from streamrec.settings import ModelSettings, ServiceSettings

    events = load_events(ml100k_path()).head(n_events)
    batches = list(from_values(events.values, ServiceSettings().batch_size))
    river_model = reco.BiasedMF(**mf_params())
    pipeline = Pipeline(ModelSettings(rating_model="biased_mf", ranker="mf"), metrics=Metrics())
    if mode == "bare":
        for user, item, rating in events.tuples:
            river_model.predict_one(user, item)
            river_model.learn_one(user, item, rating)
    elif mode == "pipeline":
        for batch in batches:
            pipeline.process(batch)


def count(mode: str, n_events: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--run",
            mode,
            "--events",
            str(n_events),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="first N ML-100K events")
    parser.add_argument("--run", choices=MODES, help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args()
    if args.run:
        work(args.run, args.events)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 1
    # The three processes are independent: run them side by side (counts do not depend on load).
    with ThreadPoolExecutor(len(MODES)) as pool:
        totals = dict(zip(MODES, pool.map(lambda m: count(m, args.events), MODES), strict=True))
    per_event = {m: (totals[m] - totals["setup"]) / args.events for m in ("bare", "pipeline")}
    print(f"instructions per event over the first {args.events:,} events (cachegrind):")
    print(f"  bare River predict_one + learn_one   {per_event['bare']:>10,.0f}")
    print(f"  streamrec Pipeline.process (mf)      {per_event['pipeline']:>10,.0f}")
    ratio = per_event["pipeline"] / per_event["bare"]
    print(f"  pipeline / bare                      {ratio:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
