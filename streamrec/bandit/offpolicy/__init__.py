"""Off-policy evaluation: what would another policy have earned on the traffic we logged?

Every published item carries `propensity`, the probability that the logging policy showed it in
that slot. With it, a log of shown slots and their rewards estimates the value (expected reward
per shown slot) of a *different* policy without deploying it. This package reads such logs, builds
the candidate policy's probabilities for the logged actions, and reports four estimators, each
with a bootstrap confidence interval, next to the logging policy's own observed value.

One module per job, in the order a report is made:

- `logs.py`: the decision-log line format and the readers (streamrec JSONL, Open Bandit CSV).
- `targets.py`: the candidate policies, as probabilities of the logged actions.
- `estimators.py`: replay, IPS, SNIPS and DR with bootstrap intervals; `evaluate_policy`.
- `cli.py`: `streamrec evaluate-policy`.

How a slate is treated
----------------------
Each slot is one decision: the target policy gives π(a | slot) for the logged item and the value
is the expected reward per shown slot (the position-wise treatment used with OBD). Interactions
between slots (one item cannot fill two slots of a list) are ignored; a greedy target that would
show its favourite in every slot is evaluated slot by slot.
"""
