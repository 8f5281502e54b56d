"""The per-frame path of every feed (compiled); see feeds/_hotpath.pxd."""
from typing import Any, Callable, Iterable

from picows import WSFrame, WSListener, WSTransport
from typing_extensions import disjoint_base

def time_ns() -> int:
    """Wall-clock ns since the epoch: the clock of every ``recv_ns``."""

@disjoint_base
class LatencyRing:
    """Fixed-size ring of latency samples (ns); memory never grows."""

    count: int
    def __new__(cls, capacity: int = 4096) -> "LatencyRing": ...
    def add(self, ns: int) -> None: ...
    def samples(self) -> list[int]: ...
    def percentiles(self, qs: Iterable[float] = (50.0, 90.0, 99.0)) -> dict[str, int]: ...
    def clear(self) -> None: ...

@disjoint_base
class FeedCounters:
    """Per-feed counters and the receive-to-callback latency ring."""

    frames: int
    bytes: int
    decode_errors: int
    gaps: int
    resyncs: int
    reconnects: int
    callback_errors: int
    @property
    def latency(self) -> LatencyRing: ...
    def __init__(self, latency_capacity: int = 4096) -> None: ...
    def as_dict(self) -> dict[str, Any]: ...

@disjoint_base
class FrameSink:
    """Base of decoders that take frames at C level."""

    def feed(self, frame: bytes | bytearray | memoryview, recv_ns: int) -> None: ...

@disjoint_base
class FrameListener(WSListener):
    """picows listener base: complete messages go to the sink (C) or ``on_frame``."""

    recorder: Any
    max_size: int
    dead: bool
    last_frame_ns: int
    @property
    def counters(self) -> FeedCounters: ...
    def __init__(self, counters: FeedCounters, on_frame: Callable[[memoryview, int], None],
                 sink: FrameSink | None, max_size: int, recorder: Any = None) -> None: ...
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...

@disjoint_base
class Dispatch:
    """What a venue calls after it changed state (latency + user callbacks)."""

    @property
    def feed_name(self) -> str: ...
    @property
    def counters(self) -> FeedCounters: ...
    def __init__(self, engine: Any, feed_name: str, counters: FeedCounters) -> None: ...
    def wants(self, kind: str) -> bool: ...
    def book(self, book: Any, recv_ns: int) -> None: ...
    def trade(self, trade: Any, recv_ns: int) -> None: ...
    def order(self, order: Any, recv_ns: int) -> None: ...
    def position(self, position: Any, recv_ns: int) -> None: ...
    def balance(self, balance: Any, recv_ns: int) -> None: ...

def invoke_callbacks(callbacks: list[Any], obj: Any, engine: Any, counters: FeedCounters | None) -> int:
    """The one wrapper around user callbacks."""
