"""Stream venue (Socket.IO) frame decoder: market-data events straight from picows'
buffer into the core. The payload schemas are documented in ``feeds.stream``.

A frame ``42[`` + ``"orderbook"|"kline"|"openorders"|"positions"`` + ``,{...}]`` (with
``/ns,`` after ``42`` for a namespace, and an optional ack id) is scanned once with
jscan from the frame's own memory: the payload goes into scratch buffers and locals,
the rest of the frame is validated, and only then is anything applied (whole or
nothing). Any other frame is handed to the venue's cold path (``venue.on_control``)
as text: Engine.IO open/ping/close, Socket.IO connect/ack/disconnect/errors and events
this decoder does not know.
"""
from cpython.mem cimport PyMem_RawFree
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp

from engine._core.types cimport LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument
from engine._core.book cimport OrderBook
from engine._core.kline cimport KlineAggregator, Frame, FRAME_TIME
from engine._core.jscan cimport (
    JsonCursor, JsonSpan, JsonStatus,
    JS_OK, JS_END, JS_BAD_FIELD, JS_MISSING_FIELD, JS_WRONG_TYPE,
    JS_OVERFLOW, JS_DUPLICATE, JK_NULL, JK_STRING, JK_NUMBER, JK_TRUE, JK_FALSE,
    js_init, js_fail, js_enter_object, js_enter_array, js_next_member,
    js_next_element, js_skip_value, js_expect_end, js_read_string, js_read_int64,
    js_read_bool, js_read_null, js_span_is, js_span_to_str, js_raise, js_peek, js_claim, js_match_word,
)
from feeds._decode_common cimport scratch_grow, span_is_bytes, read_taker_side, read_text, fill_lens

from engine.errors import BookError, DecodeError
from engine._core.kline import KlineError

cdef enum:
    NS_PER_MS = 1000000
# Largest wire time in ms that still fits int64 ns.
cdef int64_t MAX_MS = 9223372036854
# Latest candle open time KlineAggregator.push_venue accepts (its MAX_CANDLE_TS_NS, 2**62 ns).
cdef int64_t MAX_CANDLE_TS_NS = (<int64_t>1) << 62

#: Event kinds for Python (the cdef enum values of stream_decode.pxd).
EVENT_ORDERBOOK = EV_ORDERBOOK
EVENT_KLINE = EV_KLINE
EVENT_OPENORDERS = EV_OPENORDERS
EVENT_POSITIONS = EV_POSITIONS


cdef inline JsonStatus read_ms(JsonCursor* c, int64_t* out_ns) noexcept nogil:
    """A time in integer ms since the epoch -> ns, exactly (JS_OVERFLOW past int64 ns,
    JS_BAD_FIELD when negative)."""
    cdef int64_t ms = 0
    cdef Py_ssize_t at = c.pos
    cdef JsonStatus st = js_read_int64(c, False, &ms)
    if st != JS_OK:
        return st
    if ms < 0:
        return js_fail(c, JS_BAD_FIELD, at)
    if ms > MAX_MS:
        return js_fail(c, JS_OVERFLOW, at)
    out_ns[0] = ms * NS_PER_MS
    return JS_OK


# --- compact fast paths -------------------------------------------------------------
# Most venues (and python-socketio) emit compact JSON with the fields in one order.
# These read exactly that byte layout in one pass; on any other byte they return False
# with the cursor untouched and the generic member-by-member path takes over (which
# also produces the precise error). Numbers: 1-18 digits, no sign, no leading zero, so
# they cannot overflow int64; anything else falls back.

# Candle fields (read_candle): index in CANDLE_WORDS; every one but "m" is required.
cdef enum:
    C_CREATED = 0
    C_UPDATED = 6
    N_CANDLE_FIELDS = 7
    CANDLE_REQUIRED = (1 << C_UPDATED) - 1

cdef const char* CANDLE_WORDS[N_CANDLE_FIELDS]
CANDLE_WORDS[:] = [b"created", b"o", b"h", b"l", b"c", b"v", b"m"]
cdef Py_ssize_t CANDLE_LENS[N_CANDLE_FIELDS]
fill_lens(CANDLE_WORDS, CANDLE_LENS, N_CANDLE_FIELDS)


cdef inline bint lit(const char* p, const char* end, const char* s, Py_ssize_t n) noexcept nogil:
    return end - p >= n and memcmp(p, s, n) == 0


cdef inline const char* digits(const char* p, const char* end, int64_t* out) noexcept nogil:
    """Parse an unsigned JSON integer of 1-18 digits at p; NULL if p holds anything else.
    The length is checked before each digit is added, so v never exceeds 10**18 - 1."""
    cdef const char* start = p
    cdef int64_t v = 0
    while p < end and b'0' <= p[0] <= b'9':
        if p - start == 18:
            return NULL   # a 19th digit: the generic path reads it (or reports the overflow)
        v = v * 10 + (p[0] - 48)
        p += 1
    if p == start or (start[0] == b'0' and p - start > 1):
        return NULL
    out[0] = v
    return p


cdef inline const char* int_field(const char* p, const char* end, const char* key, Py_ssize_t n,
                                  int64_t* out) noexcept nogil:
    """``key`` (the literal bytes before the number, e.g. ``,"lots":``) then digits;
    NULL when p is NULL or holds anything else. Chains: p = int_field(p, ...)."""
    if p == NULL or not lit(p, end, key, n):
        return NULL
    return digits(p + n, end, out)


cdef inline bint fast_level(JsonCursor* c, LevelUpdate* lv) noexcept nogil:
    """``{"ticks":D,"lots":D}`` or ``{"ticks":D,"lots":D,"count":D}``."""
    cdef const char* end = c.buf + c.len
    cdef int64_t count
    cdef const char* p = int_field(c.buf + c.pos, end, b'{"ticks":', 9, &lv.price_ticks)
    p = int_field(p, end, b',"lots":', 8, &lv.qty_lots)
    if p != NULL and lit(p, end, b',"count":', 9):
        p = int_field(p, end, b',"count":', 9, &count)
    if p == NULL or p >= end or p[0] != b'}':
        return False
    c.pos = p + 1 - c.buf
    return True


cdef inline bint fast_trade(JsonCursor* c, TradeRow* t) noexcept nogil:
    """``{"id":D,"ticks":D,"lots":D,"side":"buy"|"sell","ts":D}``."""
    cdef const char* end = c.buf + c.len
    cdef int64_t ms
    cdef const char* p = int_field(c.buf + c.pos, end, b'{"id":', 6, &t.trade_id)
    p = int_field(p, end, b',"ticks":', 9, &t.price_ticks)
    p = int_field(p, end, b',"lots":', 8, &t.qty_lots)
    if p != NULL and lit(p, end, b',"side":"buy"', 13):
        t.side = 1
        p = int_field(p + 13, end, b',"ts":', 6, &ms)
    elif p != NULL and lit(p, end, b',"side":"sell"', 14):
        t.side = -1
        p = int_field(p + 14, end, b',"ts":', 6, &ms)
    else:
        return False
    if p == NULL or ms > MAX_MS or p >= end or p[0] != b'}':
        return False
    t.ts_ns = ms * NS_PER_MS
    c.pos = p + 1 - c.buf
    return True


# Members of level and trade objects off the fast path: one member at a time, its
# field's bit set in *seen (the caller checks that all were present).
cdef enum:
    LEVEL_FIELDS = 3       # ticks, lots ("count" is optional)
    TRADE_FIELDS = 31      # id, ticks, lots, side, ts


cdef inline JsonStatus level_member(JsonCursor* c, const JsonSpan* key, LevelUpdate* lv,
                                    unsigned int* seen) noexcept nogil:
    cdef int64_t count
    cdef JsonStatus st
    if js_span_is(c, key, b"ticks", 5):
        seen[0] |= 1
        return js_read_int64(c, False, &lv.price_ticks)
    if js_span_is(c, key, b"lots", 4):
        seen[0] |= 2
        return js_read_int64(c, False, &lv.qty_lots)
    if js_span_is(c, key, b"count", 5):
        st = js_read_int64(c, False, &count)
        if st == JS_OK and count < 0:
            return js_fail(c, JS_BAD_FIELD, key.start)
        return st
    return js_skip_value(c)


cdef inline JsonStatus trade_member(JsonCursor* c, const JsonSpan* key, TradeRow* t,
                                    unsigned int* seen) noexcept nogil:
    if js_span_is(c, key, b"id", 2):
        seen[0] |= 1
        return js_read_int64(c, False, &t.trade_id)
    if js_span_is(c, key, b"ticks", 5):
        seen[0] |= 2
        return js_read_int64(c, False, &t.price_ticks)
    if js_span_is(c, key, b"lots", 4):
        seen[0] |= 4
        return js_read_int64(c, False, &t.qty_lots)
    if js_span_is(c, key, b"side", 4):
        seen[0] |= 8
        return read_taker_side(c, &t.side)
    if js_span_is(c, key, b"ts", 2):
        seen[0] |= 16
        return read_ms(c, &t.ts_ns)
    return js_skip_value(c)


ctypedef fused Row:
    LevelUpdate
    TradeRow


cdef JsonStatus read_rows(JsonCursor* c, Row* rows, Py_ssize_t cap, Py_ssize_t* n,
                          int32_t side) noexcept nogil:
    """An array of levels ``[{"ticks":int,"lots":int,"count":int},...]`` (given
    ``side``) or of trades ``[{"id":int,"ticks":int,"lots":int,"side":"buy"|"sell",
    "ts":ms},...]`` appended to rows[*n:cap] (*n advanced). Each object takes the compact
    fast path when it can, else the member-by-member path; lots must be positive, and
    for a trade the price too, its id non-negative. Fused: one specialization per row type, no runtime switch."""
    cdef JsonSpan key
    cdef Py_ssize_t nel = 0, nmem, obj_pos
    cdef unsigned int seen
    cdef unsigned int required
    cdef Row* row
    cdef bint fast
    if Row is LevelUpdate:
        required = LEVEL_FIELDS
    else:
        required = TRADE_FIELDS
    cdef JsonStatus st = js_enter_array(c)
    while st == JS_OK:
        st = js_next_element(c, &nel)
        if st != JS_OK:
            break
        if n[0] >= cap:   # cannot happen: the reserve() bound
            return js_fail(c, JS_BAD_FIELD, c.pos)
        row = &rows[n[0]]
        if Row is LevelUpdate:
            row.side = side
            fast = fast_level(c, row)
        else:
            fast = fast_trade(c, row)
        if fast:
            obj_pos = c.pos - 1
        else:
            obj_pos = c.pos
            seen = 0
            nmem = 0
            st = js_enter_object(c)
            while st == JS_OK:
                st = js_next_member(c, &nmem, &key)
                if st == JS_OK:
                    if Row is LevelUpdate:
                        st = level_member(c, &key, row, &seen)
                    else:
                        st = trade_member(c, &key, row, &seen)
            if st != JS_END:
                return st
            st = JS_OK
            if seen != required:
                return js_fail(c, JS_MISSING_FIELD, obj_pos)
        if Row is LevelUpdate:
            if row.qty_lots <= 0:
                return js_fail(c, JS_BAD_FIELD, obj_pos)
        else:
            if row.price_ticks <= 0 or row.qty_lots <= 0 or row.trade_id < 0:
                return js_fail(c, JS_BAD_FIELD, obj_pos)
        n[0] += 1
    return JS_OK if st == JS_END else st


cdef int trade_id_cmp(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const TradeRow*>a).trade_id
    cdef int64_t y = (<const TradeRow*>b).trade_id
    return (x > y) - (x < y)


cdef class StreamSymbol:
    """One instrument of the stream venue: its book, its kline aggregator and the
    intervals subscribed, and what was applied (``last_trade_id``, ``last_seq``)."""

    def __init__(self, Instrument instrument not None, OrderBook book not None,
                 KlineAggregator aggregator=None, intervals=()):
        self.symbol = instrument.symbol
        self.symbol_bytes = instrument.symbol.encode()
        self.instrument = instrument
        self.book = book
        self.aggregator = aggregator
        self.intervals = []
        self.last_trade_id = -1
        self.last_seq = -1
        for iv in intervals:
            self.add_interval(iv)

    def add_interval(self, str interval not None):
        """Keep venue candles of ``interval`` (a time frame of the aggregator). KlineError
        when the aggregator has no such time frame. O(frames)."""
        cdef Py_ssize_t i
        if self.aggregator is None:
            raise KlineError(f"{self.symbol}: no kline aggregator for venue candles {interval!r}")
        i = self.aggregator.frame_index(interval)
        if self.aggregator.frames[i].kind != FRAME_TIME:
            raise KlineError(f"{self.symbol}: venue candles need a time frame, not {interval!r}")
        self.intervals.append((interval.encode(), i))

    @property
    def interval_names(self):
        """Intervals whose venue candles are kept (a new list)."""
        return [iv.decode() for iv, _ in self.intervals]

    def __repr__(self):
        return (f"StreamSymbol({self.symbol!r}, last_seq={self.last_seq}, "
                f"last_trade_id={self.last_trade_id}, books={self.books}, klines={self.klines})")


cdef class StreamDecoder:
    """Decodes stream-venue frames in place (see the module docstring).

    ``on_frame_c`` (C, called by the session's listener with picows' buffer; ``feed``
    from Python) is the hot path: O(frame length) scanning; an orderbook
    costs O(levels log levels) in the book's replace, plus O(trades log trades) for
    ordering its trades by id. Cold handlers on ``venue``: ``on_control(text, recv_ns)``,
    ``on_ping(recv_ns)``, ``on_seq_gap(symbol, seq, last)``, ``on_openorders(cancel,
    modify, symbol, ts_ns, recv_ns)``, ``on_balances(items, ts_ns, recv_ns)``."""

    def __cinit__(self):
        self.levels = NULL
        self.levels_cap = 0
        self.trade_rows = NULL
        self.trades_cap = 0

    def __init__(self, venue, Dispatch dispatch not None, trade_type, str namespace="/"):
        if not namespace.startswith("/"):
            raise ValueError(f"namespace must start with '/', got {namespace!r}")
        self.venue = venue
        self.dispatch = dispatch
        self.trade_type = trade_type
        self.symbols = []
        self.ns_prefix = b"" if namespace == "/" else (namespace + ",").encode()
        self.cur = None
        self.cur_frame = -1
        self.rows_a = []
        self.rows_b = []
        self.reserve(64)

    def __dealloc__(self):
        PyMem_RawFree(self.levels)
        PyMem_RawFree(self.trade_rows)

    def add_symbol(self, StreamSymbol sym not None):
        """Register a symbol (before subscribing to it). O(1)."""
        self.symbols.append(sym)
        return sym

    @property
    def symbol_list(self):
        """The registered symbols (a new list)."""
        return list(self.symbols)

    def symbol(self, str name):
        """The StreamSymbol of ``name``; KeyError if unknown."""
        for s in self.symbols:
            if (<StreamSymbol>s).symbol == name:
                return s
        raise KeyError(name)

    cdef int reserve(self, Py_ssize_t n) except -1:
        scratch_grow(<void**>&self.levels, &self.levels_cap, n, sizeof(LevelUpdate))
        scratch_grow(<void**>&self.trade_rows, &self.trades_cap, n, sizeof(TradeRow))
        return 0

    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """Decode one WebSocket message buf[0:n] (BORROWED from picows' read buffer:
        valid for this call only). Raises DecodeError for a malformed frame (nothing of
        it applied); FeedError from the cold path when the connection must end. The
        Python entry ``feed(frame, recv_ns)`` (FrameSink) serves tests and replay."""
        cdef Py_ssize_t i, k
        if n == 1 and buf[0] == b'2':
            self.pings += 1
            self.venue.on_ping(recv_ns)
            return 0
        if n >= 3 and buf[0] == b'4' and buf[1] == b'2':
            i = 2
            k = len(self.ns_prefix)
            if k:
                if n - i > k and memcmp(buf + i, <const char*>self.ns_prefix, k) == 0:
                    i += k
                else:
                    i = -1   # another namespace, or malformed: the cold path decides
            elif buf[i] == b'/':
                i = -1
            if i > 0:
                while i < n and b'0' <= buf[i] <= b'9':
                    i += 1   # an ack id the server asked for: data events are not acked
                if i < n and buf[i] == b'[':
                    if self.decode_event(buf + i, n - i, recv_ns):
                        return 0
        self.venue.on_control(buf[:n].decode("utf-8", "replace"), recv_ns)
        return 0

    cdef int decode_event(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """Decode ``["name",payload]``; 1 when handled here, 0 for the cold path."""
        cdef JsonCursor c
        cdef JsonSpan name
        cdef Py_ssize_t nel = 0
        cdef int kind = EV_NONE
        cdef JsonStatus st
        js_init(&c, buf, n)
        st = js_enter_array(&c)
        if st == JS_OK:
            st = js_next_element(&c, &nel)
        if st == JS_OK:
            st = js_read_string(&c, &name)
        if st != JS_OK:
            return 0   # not a well-formed named event: the cold path reports it
        if js_span_is(&c, &name, b"orderbook", 9):
            kind = EV_ORDERBOOK
        elif js_span_is(&c, &name, b"kline", 5):
            kind = EV_KLINE
        elif js_span_is(&c, &name, b"openorders", 10):
            kind = EV_OPENORDERS
        elif js_span_is(&c, &name, b"positions", 9):
            kind = EV_POSITIONS
        else:
            return 0
        st = js_next_element(&c, &nel)
        if st != JS_OK:
            if st == JS_END:
                raise DecodeError(f"stream {js_span_to_str(&c, &name)}: event without payload", c.pos)
            js_raise(&c, st, "stream event")
        self.cur = None
        self.cur_frame = -1
        self.has_seq = False
        self.msg_ts_ns = 0
        if kind == EV_ORDERBOOK:
            self.decode_orderbook(&c)
        elif kind == EV_KLINE:
            self.decode_kline(&c)
        elif kind == EV_OPENORDERS:
            self.decode_openorders(&c)
        else:
            self.decode_positions(&c)
        # Further arguments are allowed (skipped); then only the closing bracket.
        while True:
            st = js_next_element(&c, &nel)
            if st != JS_OK:
                break
            st = js_skip_value(&c)
            if st != JS_OK:
                break
        if st == JS_END:
            st = js_expect_end(&c)
        if st != JS_OK:
            js_raise(&c, st, "stream event")
        # The whole frame is valid: apply.
        if kind == EV_ORDERBOOK:
            self.apply_orderbook(recv_ns)
        elif kind == EV_KLINE:
            self.apply_kline(recv_ns)
        elif kind == EV_OPENORDERS:
            a, b, self.rows_a, self.rows_b = self.rows_a, self.rows_b, [], []
            self.venue.on_openorders(b, a, self.cur_symbol_text, self.msg_ts_ns, recv_ns)
        else:
            a, self.rows_a = self.rows_a, []
            self.venue.on_balances(a, self.msg_ts_ns, recv_ns)
        self.events += 1
        return 1

    cdef StreamSymbol find_symbol(self, const JsonCursor* c, const JsonSpan* span):
        cdef StreamSymbol s
        for s in self.symbols:
            if span_is_bytes(c, span, s.symbol_bytes):
                return s
        return None

    # ---- orderbook -----------------------------------------------------------------------
    cdef int decode_orderbook(self, JsonCursor* c) except -1:
        cdef JsonSpan key, sym
        cdef Py_ssize_t nmem = 0
        cdef bint has_symbol = False
        cdef unsigned int dup = 0
        cdef Py_ssize_t obj_pos = c.pos
        cdef JsonStatus st
        # A level or trade needs at least 12 bytes ({"ticks":1,"lots":1} is 21): bound.
        self.reserve((c.len - c.pos) // 12 + 2)
        self.n_levels = 0
        self.n_trades = 0
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &nmem, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"bids", 4):
                st = js_claim(c, &key, &dup, 1)
                if st == JS_OK:
                    st = read_rows(c, self.levels, self.levels_cap, &self.n_levels, SIDE_BID)
            elif js_span_is(c, &key, b"asks", 4):
                st = js_claim(c, &key, &dup, 2)
                if st == JS_OK:
                    st = read_rows(c, self.levels, self.levels_cap, &self.n_levels, SIDE_ASK)
            elif js_span_is(c, &key, b"trades", 6):
                st = js_claim(c, &key, &dup, 4)
                if st == JS_OK:
                    st = read_rows(c, self.trade_rows, self.trades_cap, &self.n_trades, 0)
            elif js_span_is(c, &key, b"symbol", 6):
                st = js_read_string(c, &sym)
                has_symbol = True
            elif js_span_is(c, &key, b"ts", 2):
                st = read_ms(c, &self.msg_ts_ns)
            elif js_span_is(c, &key, b"seq", 3):
                st = js_read_int64(c, False, &self.msg_seq)
                self.has_seq = True
            else:
                st = js_skip_value(c)
        if st != JS_END:
            js_raise(c, st, "stream orderbook")
        if not has_symbol or (dup & 3) != 3:
            raise DecodeError("stream orderbook: needs symbol, bids and asks", obj_pos)
        self.cur = self.find_symbol(c, &sym)
        if self.cur is None:
            self.unknown_symbol += 1
        return 0

    cdef int apply_orderbook(self, int64_t recv_ns) except -1:
        """Replace the book, take the new trades (ids above the last applied one), then
        run the callbacks: every trade (kline aggregator, on_trade), then the book."""
        cdef StreamSymbol s = self.cur
        cdef Py_ssize_t i
        cdef TradeRow* rows = self.trade_rows
        cdef Py_ssize_t n = self.n_trades
        cdef int64_t last, first_new
        if s is None:
            return 0
        try:
            s.book.replace_with(self.levels, self.n_levels)
        except BookError as exc:
            raise DecodeError(f"stream orderbook {s.symbol}: {exc}") from exc
        # Trades: ascending id (the venue may list them newest first), then only ids
        # above the last applied one: consecutive snapshots repeat recent trades.
        if n > 1:
            qsort(rows, n, sizeof(TradeRow), trade_id_cmp)
        last = s.last_trade_id
        if n and rows[n - 1].trade_id > last:
            s.last_trade_id = rows[n - 1].trade_id
        if self.has_seq:
            # Equal seq: the same snapshot again (a resubscribe); lower: the venue restarted.
            if s.last_seq >= 0 and self.msg_seq > s.last_seq + 1:
                self.seq_gaps += 1
                self.venue.on_seq_gap(s.symbol, self.msg_seq, s.last_seq)
            elif self.msg_seq < s.last_seq:
                self.seq_resets += 1
            s.last_seq = self.msg_seq
            s.book.last_update_id = self.msg_seq
        s.book.event_ts_ns = self.msg_ts_ns
        s.books += 1
        # Counters first (no callback runs in this loop), then the callbacks.
        first_new = last
        for i in range(n):
            if rows[i].trade_id <= last:
                self.duplicate_trades += 1
                continue
            last = rows[i].trade_id
            s.trades += 1
        # The rows stay valid across the callbacks: they live in this decoder's scratch,
        # which only a frame decode grows, and FrameSink.deliver refuses a frame fed
        # from a callback of this one.
        last = first_new
        for i in range(n):
            if rows[i].trade_id > last:
                last = rows[i].trade_id
                self.dispatch.trade_c(s.instrument, rows[i].trade_id, rows[i].price_ticks, rows[i].qty_lots,
                                      rows[i].side, rows[i].ts_ns, recv_ns, self.trade_type)
        self.dispatch.book(s.book, recv_ns)
        return 0

    # ---- kline ---------------------------------------------------------------------------
    cdef JsonStatus read_candle(self, JsonCursor* c, Candle* out) noexcept:
        """``{"created":ms,"o":int,"h":int,"l":int,"c":int,"v":int,"m":ms}`` or null."""
        cdef JsonSpan key
        cdef Py_ssize_t nmem = 0
        cdef bint is_null = False
        cdef unsigned int seen = 0
        cdef int idx
        cdef Py_ssize_t obj_pos
        # Destination of each CANDLE_WORDS field, same order.
        cdef int64_t* slots[7]   # N_CANDLE_FIELDS: a literal size needs no runtime length check
        slots[:] = [&out.open_ts_ns, &out.open_ticks, &out.high_ticks, &out.low_ticks,
                    &out.close_ticks, &out.volume_lots, &out.update_ts_ns]
        cdef JsonStatus st = js_read_null(c, &is_null)
        if st != JS_OK or is_null:
            return st
        obj_pos = c.pos
        out.update_ts_ns = 0
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &nmem, &key)
            if st != JS_OK:
                break
            idx = js_match_word(c, &key, CANDLE_WORDS, CANDLE_LENS, N_CANDLE_FIELDS)
            if idx < 0:
                st = js_skip_value(c)
            elif idx == C_CREATED or idx == C_UPDATED:
                st = read_ms(c, slots[idx])
            else:
                st = js_read_int64(c, False, slots[idx])
            if idx >= 0:
                seen |= 1u << idx
        if st != JS_END:
            return st
        if (seen & CANDLE_REQUIRED) != CANDLE_REQUIRED:
            return js_fail(c, JS_MISSING_FIELD, obj_pos)
        if out.volume_lots < 0 or not (out.low_ticks <= out.open_ticks <= out.high_ticks and
                                       out.low_ticks <= out.close_ticks <= out.high_ticks):
            return js_fail(c, JS_BAD_FIELD, obj_pos)
        out.present = 1
        return JS_OK

    cdef int decode_kline(self, JsonCursor* c) except -1:
        cdef JsonSpan key, sym, interval
        cdef Py_ssize_t nmem = 0, obj_pos = c.pos
        cdef unsigned int seen = 0
        cdef JsonStatus st
        cdef Candle* add = &self.candles[0]
        cdef Candle* mod = &self.candles[1]
        add.present = 0
        mod.present = 0
        add.is_add = 1
        mod.is_add = 0
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &nmem, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"add", 3):
                st = js_claim(c, &key, &seen, 4)
                if st == JS_OK:
                    st = self.read_candle(c, add)
            elif js_span_is(c, &key, b"modify", 6):
                st = js_claim(c, &key, &seen, 8)
                if st == JS_OK:
                    st = self.read_candle(c, mod)
            elif js_span_is(c, &key, b"symbol", 6):
                st = js_read_string(c, &sym)
                seen |= 1
            elif js_span_is(c, &key, b"interval", 8):
                st = js_read_string(c, &interval)
                seen |= 2
            else:
                st = js_skip_value(c)
        if st != JS_END:
            js_raise(c, st, "stream kline")
        if (seen & 3) != 3:
            raise DecodeError("stream kline: needs symbol and interval", obj_pos)
        self.cur = self.find_symbol(c, &sym)
        if self.cur is None:
            self.unknown_symbol += 1
            return 0
        for iv, idx in self.cur.intervals:
            if js_span_is(c, &interval, <const char*>(<bytes>iv), len(<bytes>iv)):
                self.cur_frame = idx
                break
        if self.cur_frame < 0:
            self.unknown_symbol += 1
            return 0
        # Every condition push_venue checks is checked here (read_candle: volume and
        # low <= open, close <= high; here: time range and alignment; apply_kline: add
        # or modify from the current candle), so apply_kline cannot fail halfway.
        cdef Frame* f = &self.cur.aggregator.frames[self.cur_frame]
        for i in range(2):
            if self.candles[i].present and (self.candles[i].open_ts_ns > MAX_CANDLE_TS_NS or
                                            (self.candles[i].open_ts_ns - f.offset_ns) % f.length_ns != 0):
                raise DecodeError(f"stream kline {self.cur.symbol} {js_span_to_str(c, &interval)}: created "
                                  f"{self.candles[i].open_ts_ns // NS_PER_MS} ms is not an interval start"
                                  + (" (past 2**62 ns)" if self.candles[i].open_ts_ns > MAX_CANDLE_TS_NS else ""),
                                  obj_pos)
        return 0

    cdef int apply_kline(self, int64_t recv_ns) except -1:
        """Apply the message's candles oldest first. Each is keyed by its open time
        against the aggregator's current venue candle K: later than K (or no K) opens a
        new candle, equal to K replaces it, earlier is stale (counted, skipped), whatever
        the message called it (``add`` after a resubscribe repeats the current candle)."""
        cdef StreamSymbol s = self.cur
        cdef KlineAggregator agg
        cdef Frame* f
        cdef Candle* first = &self.candles[0]
        cdef Candle* second = &self.candles[1]
        cdef Candle* cd
        cdef int k
        if s is None or self.cur_frame < 0:
            return 0
        agg = s.aggregator
        if second.present and (not first.present or second.open_ts_ns < first.open_ts_ns):
            first, second = second, first
        # The aggregator's callbacks wait until both candles are in: while its
        # `dispatching` flag is set, push_venue queues its events instead of delivering
        # them (the flag a re-entrant update sees); they are delivered below.
        cdef bint was_dispatching = agg.dispatching
        agg.dispatching = True
        try:
            for k in range(2):
                cd = first if k == 0 else second
                if not cd.present:
                    continue
                f = &agg.frames[self.cur_frame]
                if f.venue_has and cd.open_ts_ns < f.venue_cur.open_ts_ns:
                    self.stale_candles += 1
                    continue
                try:
                    agg.push_venue(self.cur_frame, not (f.venue_has and cd.open_ts_ns == f.venue_cur.open_ts_ns),
                                   cd.open_ts_ns, cd.open_ticks, cd.high_ticks, cd.low_ticks, cd.close_ticks,
                                   cd.volume_lots, cd.update_ts_ns)
                except KlineError as exc:   # every condition was checked before: a bug if seen
                    raise DecodeError(f"stream kline {s.symbol}: {exc}") from exc
                s.klines += 1
        finally:
            agg.dispatching = was_dispatching
        if not was_dispatching and (agg.n_events or agg.updated_mask):
            agg.dispatch()
        return 0

    # ---- openorders / positions (account events: Python objects for the Account API) --
    cdef dict read_item(self, JsonCursor* c, str what):
        """A flat object -> dict: strings, integers, booleans, null. ``ts`` (ms) becomes
        ns. Nested values are refused (DecodeError)."""
        cdef JsonSpan key
        cdef Py_ssize_t nmem = 0
        cdef int64_t v = 0
        cdef bint b = False
        cdef int kind
        cdef dict out = {}
        cdef JsonStatus st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &nmem, &key)
            if st != JS_OK:
                break
            kind = js_peek(c)
            name = js_span_to_str(c, &key)
            if kind == JK_STRING:
                out[name] = read_text(c, &st)
            elif kind == JK_NUMBER:
                if js_span_is(c, &key, b"ts", 2):
                    st = read_ms(c, &v)
                else:
                    st = js_read_int64(c, False, &v)
                if st == JS_OK:
                    out[name] = v
            elif kind == JK_TRUE or kind == JK_FALSE:
                st = js_read_bool(c, &b)
                out[name] = bool(b)
            elif kind == JK_NULL:
                st = js_read_null(c, &b)
                out[name] = None
            else:
                st = js_fail(c, JS_WRONG_TYPE, c.pos)
        if st != JS_END:
            js_raise(c, st, f"stream {what} item")
        return out

    cdef int read_items(self, JsonCursor* c, list rows, str what, Py_ssize_t* nel,
                        JsonStatus* st) except -1:
        """A JSON array of flat objects appended to ``rows`` as dicts (read_item, which
        raises for a bad item). *nel is the caller's element counter (js_next_element);
        *st gets the array's status, JS_OK once it closed."""
        st[0] = js_enter_array(c)
        while st[0] == JS_OK:
            st[0] = js_next_element(c, nel)
            if st[0] == JS_OK:
                rows.append(self.read_item(c, what))
        if st[0] == JS_END:
            st[0] = JS_OK
        return 0

    cdef int decode_openorders(self, JsonCursor* c) except -1:
        cdef JsonSpan key
        cdef Py_ssize_t nmem = 0, nel
        cdef bint b
        cdef unsigned int seen = 0
        cdef JsonStatus st
        cdef list rows
        self.rows_a = []
        self.rows_b = []
        self.cur_symbol_text = None
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &nmem, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"modify", 6) or js_span_is(c, &key, b"cancel", 6):
                rows = self.rows_a if js_span_is(c, &key, b"modify", 6) else self.rows_b
                st = js_claim(c, &key, &seen, 1 if rows is self.rows_a else 2)
                if st != JS_OK:
                    break
                if js_peek(c) == JK_NULL:
                    st = js_read_null(c, &b)
                    continue
                nel = 0
                self.read_items(c, rows, "openorders", &nel, &st)
            elif js_span_is(c, &key, b"symbol", 6):
                self.cur_symbol_text = read_text(c, &st)
            elif js_span_is(c, &key, b"ts", 2):
                st = read_ms(c, &self.msg_ts_ns)
            else:
                st = js_skip_value(c)
        if st != JS_END:
            js_raise(c, st, "stream openorders")
        return 0

    cdef int decode_positions(self, JsonCursor* c) except -1:
        cdef JsonSpan key
        cdef Py_ssize_t nmem = 0, nel = 0
        cdef bint seen = False
        cdef Py_ssize_t obj_pos = c.pos
        cdef JsonStatus st
        self.rows_a = []
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &nmem, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"balances", 8):
                if seen:   # as every decoder treats a field it reads twice
                    st = js_fail(c, JS_DUPLICATE, key.start)
                    break
                seen = True
                self.read_items(c, self.rows_a, "positions", &nel, &st)
            elif js_span_is(c, &key, b"ts", 2):
                st = read_ms(c, &self.msg_ts_ns)
            else:
                st = js_skip_value(c)
        if st != JS_END:
            js_raise(c, st, "stream positions")
        if not seen:
            raise DecodeError("stream positions: needs balances", obj_pos)
        return 0
