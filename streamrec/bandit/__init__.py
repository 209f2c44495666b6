"""The bandit: exploration over the sources that fill each slot, and the rewards that teach it.

- `policies.py`: `SlotPolicy`, which source fills each slot, with exact propensities.
- `rewards.py`: pending lists, the join of clicks and purchases to the list they answer, and the
  resolution of each list into policy updates and decision-log lines (`RewardLoop`).
- `offpolicy/`: what another policy would have earned on the logged decisions (OPE).

Nothing here imports the pipeline, Kafka, files (except the OPE readers) or metrics: the
pipeline drives `RewardLoop` and hands its per-batch `Feedback` to metrics.
"""
