"""What an operator sees of a running streamrec.

metrics.py  every Prometheus metric, and how a batch's report becomes them (`Metrics`)
http.py     the /metrics, /healthz and /readyz endpoint that serves them (`serve`)
logs.py     text or JSON-lines logging (`configure_logging`)
"""
