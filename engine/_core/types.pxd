# Shared C-level types for every core module. Values are fixed: they appear in
# numpy exports and in status codes returned across module boundaries.
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t

# Book sides. Python sees them as engine.Side (an IntEnum with the same values).
cdef enum:
    SIDE_BID = 0
    SIDE_ASK = 1

# Status codes returned by nogil/noexcept helpers; one helper per module turns a
# non-zero code into a Python exception with the offending value in its message.
cdef enum Status:
    ST_OK = 0
    ST_EMPTY = 1            # no digits at all
    ST_SYNTAX = 2           # a character that cannot appear in a decimal
    ST_NOT_MULTIPLE = 3     # not a whole number of ticks / lots
    ST_OVERFLOW = 4         # does not fit int64
    ST_EXPONENT = 5         # scientific notation, which no venue here sends
    ST_NEGATIVE = 6         # a sign where only non-negative values are legal

# One price level as it sits in memory; mirrored by engine.LEVEL_DTYPE
# (fields 'price' and 'qty', both little-endian int64).
ctypedef struct Level:
    int64_t price_ticks
    int64_t qty_lots

# One decoded book change, as decoders write them into their scratch buffers before
# handing the whole frame to OrderBook.apply_updates (qty_lots == 0 deletes the level).
ctypedef struct LevelUpdate:
    int64_t price_ticks
    int64_t qty_lots
    int32_t side          # SIDE_BID or SIDE_ASK
