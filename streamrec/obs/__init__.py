"""What an operator sees of a running streamrec.

metrics.py  every Prometheus metric streamrec exports (`Metrics`)
http.py     the /metrics, /healthz and /readyz endpoint that serves them (`serve`)
logs.py     text or JSON-lines logging (`configure_logging`)
"""
