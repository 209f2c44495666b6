"""What an operator sees: Prometheus metrics, the /metrics + /healthz server, JSON logs."""
