"""What a simulation run is told: the simulated world's size and habits, and how the loop runs.

Its own module because every other part of the simulator (users, loop, report, command line)
reads these and nothing here depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streamrec.bandit.policies import POLICIES

Transport = Literal["in-process", "kafka"]
POLICY_NAMES = ("none", *POLICIES)

SIMULATION_MODEL_DEFAULTS: dict[str, Any] = {"rating_model": "biased_mf"}
"""What the simulator changes in the model settings unless told otherwise: the ensemble buys
rating accuracy that top-K lists (ranked by the item ranker) do not use, at several times the
cost."""


@dataclass(frozen=True)
class SimulationOptions:
    """The simulated world and how the loop runs. Defaults finish in seconds in-process."""

    events: int = 20_000  # stop after the batch in which this many events were sent
    users: int = 500
    items: int = 300  # catalog at the start
    new_items: int = 100  # items that arrive during the run, one every `new_item_every` visits
    new_item_every: int = 40
    browse_probability: float = 0.5  # chance that a visit includes browsing on one's own
    purchase_rate: float = 0.3  # P(buy | clicked) = purchase_rate × click probability
    rating_probability: float = 0.3  # P(rate | clicked)
    position_bias: float = 0.0  # P(examine rank r) = r^-position_bias (0: every slot is seen)
    click_threshold: float = 4.0  # see TasteWorld: a random list's CTR ≈ 5%, the oracle's ≈ 40%
    # Simulated event time between visits. One a second: a user's next visit (and so their
    # clicks on the list they were shown) mostly falls inside the default 1 h reward window.
    visit_seconds: float = 1.0
    batch_visits: int = 50  # visits per batch (in-process) or per produce → wait round (Kafka)
    window_visits: int = 500  # visits per point of the report's series
    seed: int = 0
    sync_timeout_s: float = 20.0  # Kafka: longest wait for the lists a batch should produce
    progress: bool = False  # live progress on stderr


DEFAULT_OPTIONS = SimulationOptions()
"""`simulate`'s default (one shared instance: the options are frozen)."""
