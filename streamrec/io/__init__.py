"""The edges: where records come from (Kafka, event-log files, lists) and where results go.

The pipeline never imports this package; the service and the replay plug a source and a sink
from here into it.
"""
