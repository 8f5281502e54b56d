# C-level contract of the Cadenza (Centrifugo JSON v2) frame decoder.
#
# One CadenzaDecoder per connection-independent venue state: it keeps the channel
# table (recovery offsets and epochs survive reconnects) and decodes every frame in
# place with engine._core.jscan. Book publications go into a scratch LevelUpdate
# buffer and are applied whole to the OrderBook (replace_with / apply_updates);
# trades become engine.Trade objects; account publications are decoded field by field
# and handed to the venue (feeds.cadenza.CadenzaVenue) with exact integers.
from libc.stdint cimport int32_t, int64_t

from engine._core.types cimport LevelUpdate
from engine._core.instrument cimport Instrument
from engine._core.book cimport OrderBook
from engine._core.jscan cimport JsonCursor, JsonSpan, JsonStatus
from feeds._hotpath cimport FrameSink, Dispatch

cdef enum ChannelKind:
    CH_BOOK = 0        # market:orderBook:{instrumentId}
    CH_TRADE = 1       # market:trade:{instrumentId}
    CH_ACCOUNT = 2     # tradingAccount:{accountId}

# Book publication types.
cdef enum:
    BOOK_NONE = 0
    BOOK_SNAPSHOT = 1
    BOOK_DELTA = 2


# One field of a flat account object (read_flat's table).
cdef enum FieldKind:
    FIELD_STR = 0
    FIELD_INT = 1

ctypedef struct FieldSpec:
    const char* name         # a C string literal: static lifetime
    Py_ssize_t name_len
    int kind


# One publication read (scanned and converted) but not yet applied. Spans and positions
# BORROW the frame being decoded: valid only inside the on_frame_c call that read them.
# Book levels are in CadenzaDecoder.scratch[0:n_levels]. A data object that is valid
# JSON but refused (bad decimal, bad word, missing field...) is not a scan error: it is
# recorded in data_st/data_err_pos/data_dec_status, so the publication's offset can
# still be consumed (a refused publication must not be replayed forever by recovery).
ctypedef struct PubRead:
    bint has_offset
    int64_t offset
    Py_ssize_t pub_pos         # the publication object (error offsets)
    Py_ssize_t data_pos        # its data object; -1: absent
    int book_type              # BOOK_*
    int64_t seq                # book seq; -1: absent
    int64_t ts_ns
    Py_ssize_t n_levels
    JsonSpan trade_id
    int64_t price_ticks
    int64_t qty_lots
    int64_t trade_side
    unsigned int seen          # trade fields present (bits of TRADE_FIELDS in the .pyx)
    JsonStatus data_st         # JS_OK, or why the data object was refused
    Py_ssize_t data_err_pos
    int32_t data_dec_status


cdef class Channel:
    """One subscribed channel and its recovery position."""
    cdef readonly str name
    cdef bytes name_bytes              # UTF-8 name matched against push "channel" spans
    cdef readonly int kind
    cdef readonly Instrument instrument   # None for the account channel
    cdef readonly OrderBook book          # CH_BOOK only
    cdef public int64_t offset         # last applied publication offset; -1: none yet
    cdef public str epoch              # stream epoch from the last subscribe reply
    cdef public bint synced            # CH_BOOK: a snapshot was applied and no gap since
    cdef public bint need_fresh        # resubscribe without recovery (book out of sync)
    cdef public bint live              # subscribed on the current connection
    cdef public int64_t last_seq       # payload seq last applied (books, account)
    cdef readonly int64_t publications # publications applied


cdef class CadenzaDecoder(FrameSink):
    cdef list channels                 # of Channel; a handful per connection: linear match
    cdef Dispatch dispatch             # the feed's callback dispatch (C-level calls)
    cdef object venue                  # feeds.cadenza.CadenzaVenue (rare-path handlers)
    cdef object trade_type             # engine.engine.Trade
    cdef dict instruments              # instrument id (str) -> Instrument, account path
    cdef readonly dict pending         # subscribe command id -> Channel awaiting its reply
    # Scratch for one publication's levels. Owned (PyMem_RawRealloc'd, freed in
    # __dealloc__), grown once per frame to the bound its length implies; the content
    # is valid only until the next publication is decoded.
    cdef LevelUpdate* scratch
    cdef Py_ssize_t capacity
    cdef readonly int64_t pings
    cdef readonly int64_t stale_publications   # offsets at or below the applied one
    cdef readonly int64_t dropped_unsynced     # book deltas dropped while awaiting a snapshot
    cdef readonly int64_t unknown_channel
    cdef readonly int64_t rejected_publications  # offset consumed, payload refused
    cdef readonly int64_t rejected_messages      # messages (and recovered publications) refused
    # The push of the message being decoded: read during the message's scan, applied
    # only once the whole message proved valid (spans borrow the frame).
    cdef PubRead pub
    cdef Channel pub_channel           # channel of `pub`; None: no publication to apply
    cdef bint pub_unknown              # the push named a channel that is not live here
    cdef Py_ssize_t disc_pos           # push "disconnect" object; -1: none
    cdef Py_ssize_t unsub_pos          # push "unsubscribe" object; -1: none
    cdef JsonSpan push_channel
    cdef bint has_push_channel

    cdef int decode_message(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1
    cdef int read_push(self, JsonCursor* c) except -1
    cdef int apply_push(self, JsonCursor* c, int64_t recv_ns) except -1
    cdef int read_pub(self, JsonCursor* c, Channel ch, PubRead* p) except -1
    cdef int apply_pub(self, JsonCursor* c, Channel ch, PubRead* p, int64_t recv_ns) except -1
    cdef str pub_problem(self, JsonCursor* c, Channel ch, PubRead* p, Py_ssize_t* pos)
    cdef int refuse_pub(self, Channel ch, PubRead* p, str reason, Py_ssize_t pos, object error=*) except -1
    cdef int decode_subscribe_reply(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1
    cdef Channel find_channel(self, const JsonCursor* c, const JsonSpan* span)
    cdef int apply_book(self, Channel ch, PubRead* p, int64_t recv_ns) except -1
    cdef int decode_account(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1
    cdef int decode_error_reply(self, JsonCursor* c, int64_t cmd_id) except -1
    cdef int decode_control_push(self, JsonCursor* c, Py_ssize_t disc_pos, Py_ssize_t unsub_pos,
                                 str channel) except -1
    cdef bint offset_ok(self, Channel ch, bint has_offset, int64_t offset) except -1
    cdef Instrument instrument_of(self, JsonCursor* c, const JsonSpan* span)
    cdef Instrument read_account_object(self, JsonCursor* c, Channel ch, const FieldSpec* specs, int n_specs,
                                        JsonSpan* sp, int64_t* iv, unsigned int* seen, unsigned int required,
                                        int inst_field, str what, str needs)
    cdef int decode_order(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1
    cdef int decode_fill(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1
    cdef int decode_list(self, JsonCursor* c, Channel ch, int64_t recv_ns, bint balances,
                         Py_ssize_t obj_pos) except -1
    cdef str opt_str(self, JsonCursor* c, const JsonSpan* spans, unsigned int seen, int i)
