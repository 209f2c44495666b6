"""What an operator sees of a running streamrec.

metrics.py     every Prometheus metric, and how a batch's report becomes them (`Metrics`)
collectors.py  a moving-mean window and a histogram fed a batch at a time
http.py        the /metrics, /healthz and /readyz endpoint that serves them (`serve`)
logs.py        text or JSON-lines logging (`configure_logging`)
"""
