"""The Kafka consumer service: the run loop, the commit point, and the state they keep.

loop.py     the loop: poll a batch → learn and publish it → commit when due
worker.py   one consumer's work: batches, rebalances, outages, rollbacks
commit.py   the commit point: flush producer → persist checkpoint → commit offsets
state.py    the model and the offsets it has learned up to
main.py     `streamrec run` / `python -m streamrec.service`: flags → settings → run()
"""

from streamrec.service.loop import GC_THRESHOLDS, run
from streamrec.service.state import Progress, RunSummary, ServiceState

__all__ = ["GC_THRESHOLDS", "Progress", "RunSummary", "ServiceState", "run"]
