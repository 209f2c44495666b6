"""Offline measurement: how good the model is, judged on the stream it learns from.

- `prequential.py`: test-then-learn metrics (RMSE, MAE, Recall@K, NDCG@K), and `LiveQuality`,
  the sampled version the service reports to Prometheus.
- `replay.py`: an event-log file through the production `Pipeline`, with that evaluation.
- `report.py`: plots of a replay report.

Off-policy evaluation of exploration policies lives with the bandit (`streamrec.bandit.offpolicy`).
"""
