"""The relay's metrics, rendered in the Prometheus text exposition format (0.0.4).

A few counters, gauges and histograms, with labels, and nothing else: no
dependency, no global registry (each :class:`~relay.server.Relay` owns a
:class:`RelayMetrics`). ``GET /metrics`` on the relay's port serves
:meth:`RelayMetrics.render`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

__all__ = ["Counter", "Gauge", "Histogram", "RelayMetrics"]

Labels = tuple[tuple[str, str], ...]

#: Latency buckets in seconds, from 50 us to 10 s.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Counter:
    """A monotonically increasing count, per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def samples(self) -> Iterable[str]:
        # A counter without labels is exposed at 0 before its first increment.
        values = self._values or {(): 0.0}
        for key, value in values.items():
            yield f"{self.name}_total{_labels(key)} {_number(value)}"


class Gauge:
    """A value read when scraped."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name = name
        self.help = help_text
        self._read = read

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {_number(self._read())}"


class Histogram:
    """Observations counted in cumulative buckets."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> None:
        self.name = name
        self.help = help_text
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._count += 1

    def samples(self) -> Iterable[str]:
        running = 0
        for bound, count in zip(self._bounds, self._counts, strict=False):
            running += count
            yield f'{self.name}_bucket{{le="{_number(bound)}"}} {running}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self._count}'
        yield f"{self.name}_sum {_number(self._sum)}"
        yield f"{self.name}_count {self._count}"


Metric = Counter | Gauge | Histogram


class RelayMetrics:
    """Every metric a relay exposes."""

    def __init__(self, rooms: Callable[[], float], connections: Callable[[], float]) -> None:
        """Create the metrics.

        Args:
            rooms: Reads the number of rooms in memory.
            connections: Reads the number of open peer connections.
        """
        p = "collab_relay"
        self.rooms = Gauge(f"{p}_rooms", "Rooms held in memory.", rooms)
        self.connections = Gauge(f"{p}_connections", "Open peer connections.", connections)
        self.messages_in = Counter(f"{p}_messages_in", "Messages received from peers, by type.")
        self.messages_out = Counter(f"{p}_messages_out", "Messages sent to peers.")
        self.bytes_in = Counter(f"{p}_bytes_in", "Bytes of messages received from peers.")
        self.bytes_out = Counter(f"{p}_bytes_out", "Bytes of messages sent to peers.")
        self.connections_accepted = Counter(
            f"{p}_connections_accepted", "Connections admitted to a room, by access."
        )
        self.rejected = Counter(
            f"{p}_rejected_connections", "Connections refused or closed by the relay, by reason."
        )
        self.fanout_latency = Histogram(
            f"{p}_fanout_latency_seconds",
            "From receiving an update to sending it to one other peer (store write included).",
        )
        self.store_write_latency = Histogram(
            f"{p}_store_write_latency_seconds", "Duration of one store commit (a batch of updates)."
        )
        self.rooms_loaded = Counter(f"{p}_rooms_loaded", "Rooms loaded from the store.")
        self.rooms_evicted = Counter(f"{p}_rooms_evicted", "Idle rooms evicted from memory.")
        self.compactions = Counter(f"{p}_compactions", "Store compactions of a room's updates.")
        self.rpc_messages = Counter(
            f"{p}_rpc_messages",
            "RPC messages routed, by route: direct (to a peer of this node), broadcast, "
            "other_node (to a peer of another node), no_target (no peer holds the client id), "
            "from_node (received from another node and delivered here).",
        )
        self._all: tuple[Metric, ...] = (
            self.rooms,
            self.connections,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
            self.connections_accepted,
            self.rejected,
            self.fanout_latency,
            self.store_write_latency,
            self.rooms_loaded,
            self.rooms_evicted,
            self.compactions,
            self.rpc_messages,
        )

    def render(self) -> str:
        """The metrics in the Prometheus text format."""
        lines: list[str] = []
        for metric in self._all:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
