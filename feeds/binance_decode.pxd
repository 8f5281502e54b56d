# C-level contract of the Binance frame decoder.
#
# One BinanceDecoder per instrument decodes any Binance market-data frame -- bare or in
# the combined-stream envelope {"stream":..., "data":{...}} -- in one pass over the
# frame's bytes with engine._core.jscan. Book levels go into the decoder's scratch
# buffer of LevelUpdate; scalar fields into the structs below. Nothing is applied
# anywhere: the caller (feeds.binance_sync) validates the sequence and applies whole.
from libc.stdint cimport int32_t, int64_t, uint32_t

from engine._core.types cimport LevelUpdate
from engine._core.instrument cimport Instrument
from engine._core.jscan cimport JsonCursor, JsonStatus

# What a frame was.
cdef enum BinanceKind:
    BK_IGNORED = 0        # valid JSON of another event/reply (kline, {"result":null,"id":1})
    BK_DEPTH = 1          # depthUpdate diff: header in `depth`, levels in scratch
    BK_SNAPSHOT = 2       # REST depth snapshot: header in `depth`, levels in scratch
    BK_BOOK_TICKER = 3    # bookTicker: `ticker`
    BK_TRADE = 4          # trade: `trade`
    BK_AGG_TRADE = 5      # aggTrade: `trade`

# Market flavour: decides which sequence fields a depthUpdate must carry.
cdef enum BinanceMarket:
    BM_SPOT = 0           # U, u
    BM_USDM = 1           # U, u, pu
    BM_COINM = 2          # U, u, pu

ctypedef struct DepthHeader:
    int64_t first_update_id       # U (snapshot: lastUpdateId)
    int64_t final_update_id       # u (snapshot: lastUpdateId)
    int64_t prev_final_update_id  # pu; -1 when absent (spot, snapshots)
    int64_t event_ts_ns           # E in ns; -1 when absent
    int64_t transact_ts_ns        # T in ns; -1 when absent
    Py_ssize_t n_levels           # levels written to the scratch buffer

ctypedef struct BookTicker:
    int64_t update_id             # u
    int64_t bid_price_ticks
    int64_t bid_qty_lots
    int64_t ask_price_ticks
    int64_t ask_qty_lots
    int64_t event_ts_ns           # E in ns; -1 when absent (spot sends none)

ctypedef struct TradeEvent:
    int64_t trade_id              # t (trade) or a (aggTrade)
    int64_t price_ticks
    int64_t qty_lots
    int32_t taker_side            # SIDE_BID: buyer took (m false); SIDE_ASK: seller took
    int64_t trade_ts_ns           # T in ns; -1 when absent
    int64_t event_ts_ns           # E in ns; -1 when absent
    int64_t first_trade_id        # f (aggTrade); -1 otherwise
    int64_t last_trade_id         # l (aggTrade); -1 otherwise


cdef class BinanceDecoder:
    cdef readonly Instrument instrument
    cdef readonly int market
    cdef bint check_symbol
    # symbol_ptr points into symbol_utf8, which this object owns for its lifetime.
    cdef bytes symbol_utf8
    cdef const char* symbol_ptr
    cdef Py_ssize_t symbol_len
    # The instrument's steps, copied so that the nogil decode never touches it.
    cdef int32_t price_decimals
    cdef int64_t tick_units
    cdef int32_t qty_decimals
    cdef int64_t lot_units
    # Scratch for one frame's levels. Owned (PyMem_Malloc'd, freed in __dealloc__);
    # grown before a decode to the bound the frame's length implies, so the steady
    # state never allocates. Valid until the next decode call.
    cdef LevelUpdate* levels
    cdef Py_ssize_t capacity
    cdef DepthHeader depth
    cdef BookTicker ticker
    cdef TradeEvent trade
    # Copied (not borrowed) cursor of the last failed decode: err_pos and dec_status
    # only; its buf pointer is stale once the call returns and must not be read.
    cdef JsonCursor last_error
    cdef JsonStatus last_status

    # Decode buf[0:n] (borrowed for the call only). Returns the BinanceKind, or -1 with
    # DecodeError raised (nothing else is touched). Grows the scratch if needed.
    cdef int decode(self, const char* buf, Py_ssize_t n) except -1
    # The nogil core: JS_OK with *kind set to a BinanceKind, or an error status with
    # the cursor's err_pos and *kind set to the id of the field being read (-1: none).
    # The scratch must already hold n // 6 + 2 levels.
    cdef JsonStatus decode_c(self, JsonCursor* c, int* kind) noexcept nogil
    cdef int reserve(self, Py_ssize_t n_levels) except -1
