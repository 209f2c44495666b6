"""Two collectors prometheus-client lacks: a moving mean and a histogram fed a batch at a time.

They exist for the per-event budget (STYLE: measure first): a quality gauge read at scrape time
from a running window, and a latency histogram bucketed by numpy once per batch.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

QUALITY_WINDOW = 10_000
"""Evaluations the online RMSE/MAE/hit-rate gauges average over: recent enough to show drift,
large enough that one odd user does not move the line."""


class RecentWindow:
    """Mean of the last `size` values with O(1) updates.

    Running sums drift by float rounding when values leave the window; they are recomputed from
    the window each time it turns over once, which bounds the drift at no per-event cost.
    """

    def __init__(self, size: int = QUALITY_WINDOW) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self.size = size
        self._values: deque[float] = deque(maxlen=size)
        self._sum = 0.0
        self._since_resum = 0

    def add(self, value: float) -> None:
        if len(self._values) == self.size:
            self._sum -= self._values[0]
        self._values.append(value)
        self._sum += value
        self._since_resum += 1
        if self._since_resum >= self.size:
            self._sum = math.fsum(self._values)
            self._since_resum = 0

    def __len__(self) -> int:
        return len(self._values)

    def mean(self) -> float:
        """NaN when empty: Prometheus shows a gap instead of a misleading zero."""
        n = len(self._values)
        return self._sum / n if n else math.nan


class BatchHistogram(Collector):
    """A label-less Prometheus histogram that takes a whole batch of observations at once.

    prometheus-client's `Histogram.observe` costs about 1.5 µs per value, which for a per-event
    latency is a tenth of the whole per-event budget; here a batch is bucketed by numpy in one
    call. It exports exactly what a `Histogram` would (`_bucket`, `_count`, `_sum`).

    >>> from prometheus_client import CollectorRegistry
    >>> registry = CollectorRegistry()
    >>> h = BatchHistogram("demo_seconds", "Demo.", buckets=(0.1, 1.0), registry=registry)
    >>> h.observe_many([0.05, 0.1, 0.5, 7.0])
    >>> h.observe(0.2)
    >>> registry.get_sample_value("demo_seconds_bucket", {"le": "0.1"})
    2.0
    >>> registry.get_sample_value("demo_seconds_bucket", {"le": "+Inf"})
    5.0
    >>> registry.get_sample_value("demo_seconds_count")
    5.0
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.array(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last one: above all
        self._sum = 0.0
        self._lock = threading.Lock()  # the scrape runs on the metrics server's thread
        registry.register(self)

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def observe_many(self, values: Sequence[float] | npt.NDArray[np.float64]) -> None:
        """Count every value (`le` buckets are inclusive, as in Prometheus)."""
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0:
            return
        # NaN lands in no bucket but poisons the sum, as in prometheus-client's Histogram.
        counted = array[~np.isnan(array)]
        counts = np.bincount(np.searchsorted(self.bounds, counted), minlength=len(self._counts))
        total = float(array.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).astype(np.float64).tolist()
            total = self._sum
        labels = [floatToGoString(b) for b in self.bounds.tolist()] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(labels, cumulative, strict=True)), total)
        yield family
