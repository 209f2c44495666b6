"""Shared fixtures. Kafka tests use a real Kafka-protocol broker: an embedded Tansu started once per
session on a free port, or the Kafka named by `STREAMREC_TEST_BROKER=host:port`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`host:port` of a broker that lives for the whole test session."""
    external = os.environ.get("STREAMREC_TEST_BROKER")
    if external:
        yield external
        return
    from streamrec.io.embedded_broker import EmbeddedBroker

    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def unique_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """`unique_topic(stem="events", partitions=1) -> name`: a freshly created topic whose name no
    other test (or earlier run against the same external broker) has used."""
    from streamrec.io.kafka_config import create_topics

    test_name = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:60]

    def make(stem: str = "events", partitions: int = 1) -> str:
        name = f"{test_name}.{stem}.{uuid.uuid4().hex[:8]}"
        create_topics(kafka_bootstrap, [name], partitions=partitions)
        return name

    return make


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path
