# C-level contract of the stream venue (Socket.IO) frame decoder.
#
# One StreamDecoder per venue (state survives reconnects: last trade id and seq per
# symbol); it is the venue's frame_sink, so the session's compiled listener calls
# on_frame_c with picows' buffer and no Python frame in between. Every frame that starts with the Socket.IO event prefix `42[` (after the
# namespace, if any) and names a market-data event (orderbook, kline, openorders,
# positions) is decoded in place with engine._core.jscan from picows' buffer: first
# into scratch memory and locals (no state change), then, once the whole frame proved
# valid, applied. Every other frame (open, ping, connect, acks, errors) goes to the
# venue's cold path as text. Payload schemas: feeds.stream module docstring.
from libc.stdint cimport int32_t, int64_t

from engine._core.types cimport LevelUpdate
from engine._core.instrument cimport Instrument
from engine._core.book cimport OrderBook
from engine._core.kline cimport KlineAggregator
from engine._core.jscan cimport JsonCursor, JsonSpan, JsonStatus
from feeds._hotpath cimport FrameSink, Dispatch

cdef enum StreamEvent:
    EV_NONE = 0
    EV_ORDERBOOK = 1
    EV_KLINE = 2
    EV_OPENORDERS = 3
    EV_POSITIONS = 4

# One trade of an orderbook message's `trades`, decoded into the trade scratch.
ctypedef struct TradeRow:
    int64_t trade_id
    int64_t price_ticks
    int64_t qty_lots
    int64_t ts_ns
    int64_t side           # +1 taker buy, -1 taker sell

# One venue candle of a kline message (`add` or `modify`).
ctypedef struct Candle:
    int64_t open_ts_ns     # `created` (ms on the wire)
    int64_t open_ticks
    int64_t high_ticks
    int64_t low_ticks
    int64_t close_ticks
    int64_t volume_lots
    int64_t update_ts_ns   # `m` (ms on the wire); 0 when absent
    int32_t present
    int32_t is_add


cdef class StreamSymbol:
    """Per-symbol state: where its data goes and what was applied."""
    cdef readonly str symbol
    cdef bytes symbol_bytes           # UTF-8, matched against the `symbol` span
    cdef readonly Instrument instrument
    cdef readonly OrderBook book
    cdef readonly KlineAggregator aggregator   # None: klines of this symbol are counted, not kept
    cdef list intervals               # of (bytes interval, int frame index)
    cdef public int64_t last_trade_id # highest trade id applied; -1: none yet
    cdef public int64_t last_seq      # seq of the last applied orderbook; -1: none yet
    cdef readonly int64_t books       # orderbook messages applied
    cdef readonly int64_t klines      # candles applied (add or modify)
    cdef readonly int64_t trades      # new trades applied (duplicates excluded)


cdef class StreamDecoder(FrameSink):
    cdef object venue                 # feeds.stream.StreamVenue (cold-path handlers)
    cdef Dispatch dispatch            # the feed's callback dispatch (C-level calls)
    cdef object trade_type            # engine.engine.Trade
    cdef list symbols                 # of StreamSymbol; a handful: linear match
    cdef bytes ns_prefix              # b"" for "/", else b"/ns," as on the wire
    # Scratch memory, owned (PyMem_RawRealloc'd, freed in __dealloc__), grown per frame to
    # the bound its length implies; contents valid only until the next frame.
    cdef LevelUpdate* levels
    cdef Py_ssize_t levels_cap
    cdef TradeRow* trade_rows
    cdef Py_ssize_t trades_cap
    # Decoded, not yet applied, parts of the current frame.
    cdef Py_ssize_t n_levels
    cdef Py_ssize_t n_trades
    cdef Candle candles[2]
    cdef int64_t msg_ts_ns
    cdef int64_t msg_seq
    cdef bint has_seq
    cdef StreamSymbol cur
    cdef Py_ssize_t cur_frame         # kline: frame index of the message's interval; -1 unknown
    cdef object cur_symbol_text       # openorders: top-level symbol (str) or None
    cdef list rows_a                  # openorders modify / positions balances (dicts)
    cdef list rows_b                  # openorders cancel
    # Counters.
    cdef readonly int64_t events
    cdef readonly int64_t pings
    cdef readonly int64_t duplicate_trades
    cdef readonly int64_t stale_candles
    cdef readonly int64_t unknown_symbol
    cdef readonly int64_t seq_gaps
    cdef readonly int64_t seq_resets

    cdef int reserve(self, Py_ssize_t n) except -1
    cdef int decode_event(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1
    cdef StreamSymbol find_symbol(self, const JsonCursor* c, const JsonSpan* span)
    cdef JsonStatus read_candle(self, JsonCursor* c, Candle* out) noexcept
    cdef int decode_orderbook(self, JsonCursor* c) except -1
    cdef int apply_orderbook(self, int64_t recv_ns) except -1
    cdef int decode_kline(self, JsonCursor* c) except -1
    cdef int apply_kline(self, int64_t recv_ns) except -1
    cdef int decode_openorders(self, JsonCursor* c) except -1
    cdef int decode_positions(self, JsonCursor* c) except -1
    cdef dict read_item(self, JsonCursor* c, str what)
    cdef int read_items(self, JsonCursor* c, list rows, str what, Py_ssize_t* nel,
                        JsonStatus* st) except -1
