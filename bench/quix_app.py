"""Quix Streams + River, doing only the learning: the alternative a Python team would reach for.

Runs under an interpreter that has `quixstreams` and `river` (not streamrec: Quix pins its own
confluent-kafka, so it lives in its own virtual environment). `bench/throughput.py` starts it as
a subprocess; it prints one JSON line with events/s, timed from the first event to the last.

    /work/quixvenv/bin/python bench/quix_app.py --bootstrap-servers HOST:PORT --topic T --events N
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--n-factors", type=int, default=10)
    parser.add_argument("--bias-lr", type=float, default=0.025)
    parser.add_argument("--latent-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=73)
    args = parser.parse_args()

    import quixstreams
    from quixstreams import Application
    from river import optim, reco

    model = reco.BiasedMF(
        n_factors=args.n_factors,
        bias_optimizer=optim.SGD(args.bias_lr),
        latent_optimizer=optim.SGD(args.latent_lr),
        seed=args.seed,
    )
    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        loglevel=logging.WARNING,
        consumer_extra_config={"session.timeout.ms": 6000, "fetch.wait.max.ms": 10},
    )
    topic = app.topic(args.topic, value_deserializer="json")
    state = {"seen": 0, "started": 0.0, "finished": 0.0}

    def learn(event: dict) -> None:
        if state["seen"] == 0:
            state["started"] = time.perf_counter()
        user, item = event["user_id"], event["item_id"]
        model.predict_one(user, item)
        model.learn_one(user, item, event["rating"])
        state["seen"] += 1
        if state["seen"] >= args.events:
            state["finished"] = time.perf_counter()
            app.stop()

    app.dataframe(topic=topic).update(learn)
    app.run()
    seconds = state["finished"] - state["started"]
    print(
        json.dumps(
            {
                "events": state["seen"],
                "seconds": seconds,
                # The first event starts the clock, so it is not counted.
                "events_per_second": (state["seen"] - 1) / seconds if seconds > 0 else None,
                "quixstreams": quixstreams.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
