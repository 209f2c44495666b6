"""The edges: where records come from (Kafka, event-log files, lists) and where results go.

The pipeline never imports this package; the service and the replay plug a source and a sink
from here into it.

- `edges`: the `Source` and `Sink` protocols every edge below has the shape of.
- `file_source`: `FileSource`, a JSONL event log read in batches; `from_values` for lists.
- `file_sink`: `JsonlSink` and `ListSink`, results to JSONL files or lists; `DecisionLogFile`.
- `kafka_source`: `KafkaSource`, the service's record path: subscribe, poll, commit offsets.
- `partitions`: which partitions the consumer owns, from where, and log-reset detection.
- `kafka_sink`: `KafkaSink`, recommendations and dead letters out through one producer.
- `kafka_config`: client settings both Kafka edges share, and topic creation.
- `broker_watch`: whether Kafka can be reached, logged once per outage.
- `produce_file`: `streamrec produce`, a JSONL event log onto a topic.
- `embedded_broker`: an in-memory Tansu broker for tests, demos and laptop trials.
"""
