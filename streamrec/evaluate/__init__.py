"""Offline measurement: how good the model is, judged on the stream it learns from.

- `replay.py`: an event-log file through the production `Pipeline`, scored test-then-learn by
  `core/quality.py` (RMSE, MAE, Recall@K, NDCG@K; the service reports a sampled version live).
- `report.py`: plots of a replay report.

Off-policy evaluation of exploration policies lives with the bandit (`streamrec.bandit.offpolicy`).
"""
