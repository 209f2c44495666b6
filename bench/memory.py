"""Memory at scale and recovery: 1M users × 100k items at 32 factors, and restarting from it.

Each measurement runs in a fresh process (`python -m bench.memory ...`), so the resident size is
not polluted by whatever the benchmark process allocated before; RSS comes from
/proc/self/status (VmRSS), before and after learning.

- `mf`:    the rating learner alone (`DenseBiasedMF` via `make_rating_model("biased_mf")`).
- `model`: everything a checkpoint holds (`Pipeline`: id maps, histories, popularity, rating
           model, ranker), learning through `RecommenderModel.learn`. Then the checkpoint it
           would write: digest, save and load times and the file size. The checkpoint's offsets
           point at the start of a topic, so `recovery()` can restart the real service from it.

Synthetic events: one rating per user (so every user exists), items cycling through the catalog
(so every item exists); ratings uniform in 1..5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.common import Row, fresh_topic, service_command, vm_rss_bytes

TARGET_BYTES = 1 << 30
BASE_TIME_S = 1_767_225_600.0


def _events(n_users: int, n_items: int, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    items = rng.permutation(max(n_users, n_items)) % n_items
    ratings = rng.integers(1, 6, n_users)
    return items, ratings


def learn_mf(n_users: int, n_items: int, factors: int) -> dict[str, Any]:
    from streamrec.learners import make_rating_model

    items, ratings = _events(n_users, n_items)
    before = vm_rss_bytes()
    model = make_rating_model("biased_mf", n_factors=factors)
    started = time.perf_counter()
    learn = model.learn_one
    for user in range(n_users):
        learn(user, int(items[user]), float(ratings[user]))
    for item in range(n_items):  # items the per-user pass missed (only when items > users)
        if item not in model.i_latents:  # type: ignore[attr-defined]
            learn(0, item, 3.0)
    seconds = time.perf_counter() - started
    return {"rss_delta": vm_rss_bytes() - before, "learn_seconds": seconds}


def learn_model(
    n_users: int, n_items: int, factors: int, ranker: str, state_dir: Path | None, topic: str
) -> dict[str, Any]:
    from streamrec.contract.events import RatingEvent
    from streamrec.core.pipeline import Pipeline
    from streamrec.service import ServiceState
    from streamrec.settings import ModelSettings, ServiceSettings
    from streamrec.store.checkpoint import CheckpointStore
    from streamrec.store.checkpoint_key import state_dir_key

    items, ratings = _events(n_users, n_items)
    settings = ModelSettings(
        rating_model="biased_mf", rating_params={"n_factors": factors}, ranker=ranker
    )
    before = vm_rss_bytes()
    pipeline = Pipeline(settings)
    learn = pipeline.model.learn
    started = time.perf_counter()
    n_events = max(n_users, n_items)
    for n in range(n_events):
        learn(
            RatingEvent.model_construct(
                event_id=f"m{n}",
                type="rating",
                user_id=f"u{n % n_users}",
                item_id=f"i{int(items[n])}",
                timestamp=BASE_TIME_S + n,
                rating=float(ratings[n % n_users]),
            )
        )
    out: dict[str, Any] = {
        "rss_delta": vm_rss_bytes() - before,
        "learn_seconds": time.perf_counter() - started,
        "events": n_events,
        "users": pipeline.n_users,
        "items": pipeline.n_items,
    }
    if state_dir is None:
        return out
    service = ServiceSettings()
    # The key `recovery` hands to the service it restarts (service_command).
    store = CheckpointStore(state_dir, state_dir_key(state_dir), service.checkpoints_kept)
    t0 = time.perf_counter()
    digest = pipeline.model_digest()
    t1 = time.perf_counter()
    _meta, path, size = store.save(
        ServiceState(pipeline.state()),
        {(topic, 0): 0},
        events_learned=pipeline.events_learned,
        users=pipeline.n_users,
        items=pipeline.n_items,
        model_digest=digest,
        extra={"reason": "bench"},
    )
    t2 = time.perf_counter()
    del pipeline
    loaded = store.latest()
    t3 = time.perf_counter()
    assert loaded is not None and loaded.meta.model_digest == digest
    out.update(
        {
            "digest_seconds": t1 - t0,
            "save_seconds": t2 - t1,
            "load_seconds": t3 - t2,
            "checkpoint_bytes": size,
            "checkpoint": str(path),
        }
    )
    return out


def _run_worker(args: list[str], timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.memory {' '.join(args)} failed: {done.stderr[-800:]}")
    return dict(orjson.loads(done.stdout.strip().splitlines()[-1]))


def memory_rows(
    n_users: int, n_items: int, factors: int, bootstrap: str | None, tail: int
) -> list[Row]:
    """Memory of the learner alone and of the whole model; checkpoint and recovery of the latter."""
    size = f"{n_users:,} users × {n_items:,} items, {factors} factors"
    dataset = f"synthetic: {max(n_users, n_items):,} ratings ({size})"
    timeout = 120 + max(n_users, n_items) / 2_000
    rows: list[Row] = []
    mf = _run_worker(["mf", str(n_users), str(n_items), str(factors)], timeout)
    rows.append(
        Row(
            "memory_mf",
            f"RSS of DenseBiasedMF alone, {size}",
            mf["rss_delta"] / 2**20,
            "MiB",
            target="≤ 1024 MiB",
            met=mf["rss_delta"] <= TARGET_BYTES,
            dataset=dataset,
            settings={"rating_model": "biased_mf", "n_factors": factors},
            note=f"learned in {mf['learn_seconds']:.1f} s",
            extra=mf,
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        state_dir = Path(tmp) / "state"
        topic = fresh_topic("recovery")
        for ranker in ("knn", "mf"):
            keep = ranker == "knn"  # the default configuration is the one restarted below
            args = ["model", str(n_users), str(n_items), str(factors), "--ranker", ranker]
            if keep:
                args += ["--state-dir", str(state_dir), "--topic", topic]
            result = _run_worker(args, timeout * 3)
            rows.append(
                Row(
                    f"memory_model_{ranker}",
                    f"RSS of the whole model (biased_mf + {ranker} ranker), {size}",
                    result["rss_delta"] / 2**20,
                    "MiB",
                    target="≤ 1024 MiB",
                    met=result["rss_delta"] <= TARGET_BYTES,
                    dataset=dataset,
                    settings={"rating_model": "biased_mf", "ranker": ranker, "n_factors": factors},
                    note="id maps, histories, popularity, learners; "
                    f"learned in {result['learn_seconds']:.1f} s",
                    extra=result,
                )
            )
            if keep:
                checkpoint = result
        rows.append(
            Row(
                "checkpoint",
                "checkpoint of that model: digest + write, then load",
                checkpoint["digest_seconds"] + checkpoint["save_seconds"],
                "s",
                dataset=dataset,
                settings={"ranker": "knn", "n_factors": factors},
                note=f"digest {checkpoint['digest_seconds']:.1f} s, write "
                f"{checkpoint['save_seconds']:.1f} s, load {checkpoint['load_seconds']:.1f} s, "
                f"{checkpoint['checkpoint_bytes'] / 2**20:,.0f} MiB",
                extra=checkpoint,
            )
        )
        if bootstrap is None:
            rows.append(
                Row("recovery", "restart → caught up", None, "s", note="skipped: no broker")
            )
        else:
            rows.append(recovery(bootstrap, topic, state_dir, n_users, n_items, tail, dataset))
    return rows


def recovery(
    bootstrap: str,
    topic: str,
    state_dir: Path,
    n_users: int,
    n_items: int,
    tail: int,
    dataset: str,
) -> Row:
    """Start `python -m streamrec.service` on the checkpoint; time until the tail is learned.

    Restart = process start → restore (verify, unpickle) → join the group → seek to the
    checkpoint's offset → consume and learn `tail` events. The final checkpoint written at exit
    is reported apart (it is shutdown work, not catching up)."""
    from bench.common import produce_all
    from streamrec.io.kafka_config import create_topics

    create_topics(bootstrap, [topic])
    values, keys = [], []
    for n in range(tail):
        user = f"u{(n * 7919) % n_users}"
        event = {
            "event_id": f"tail-{n}",
            "type": "rating",
            "user_id": user,
            "item_id": f"i{(n * 104_729) % n_items}",
            "timestamp": int((BASE_TIME_S + max(n_users, n_items) + n) * 1000),
            "rating": 1 + n % 5,
        }
        values.append(orjson.dumps(event))
        keys.append(user.encode())
    produce_all(bootstrap, topic, values, keys)
    command, env = service_command(
        bootstrap,
        topic,
        state_dir,
        group_stem="recovery",
        max_events=tail,
        model={"rating_model": "biased_mf"},
        extra_args=["--progress"],
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = caught_up = None
    assert process.stdout is not None
    for line in process.stdout:
        now = time.perf_counter()
        if not line.startswith("{"):
            continue
        record = orjson.loads(line)
        if "summary" in record:
            break
        if first is None:
            first = now
        if record.get("consumed", 0) >= tail and caught_up is None:
            caught_up = now
    process.wait(timeout=600)
    exited = time.perf_counter()
    if process.returncode != 0 or first is None or caught_up is None:
        err = process.stderr.read()[-800:] if process.stderr else ""
        return Row("recovery", "restart → caught up", None, "s", note=f"failed: {err}")
    return Row(
        "recovery",
        f"restart → caught up ({tail:,}-event tail)",
        caught_up - started,
        "s",
        dataset=dataset,
        settings={"ranker": "knn", "tail_events": tail, "entry": "python -m streamrec.service"},
        note=f"first batch learned after {first - started:.1f} s (start, restore, join, seek); "
        f"exit with final checkpoint after {exited - started:.1f} s",
        extra={
            "first_batch_s": first - started,
            "caught_up_s": caught_up - started,
            "exit_s": exited - started,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("what", choices=["mf", "model"])
    parser.add_argument("users", type=int)
    parser.add_argument("items", type=int)
    parser.add_argument("factors", type=int)
    parser.add_argument("--ranker", default="knn")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--topic", default=f"bench.recovery.{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    if args.what == "mf":
        result = learn_mf(args.users, args.items, args.factors)
    else:
        result = learn_model(
            args.users, args.items, args.factors, args.ranker, args.state_dir, args.topic
        )
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
