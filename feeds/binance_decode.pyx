"""Binance market-data frame decoder: bytes -> LevelUpdate scratch + C structs, one pass.

Handles ``depthUpdate`` (spot ``U``/``u``; USD-M and COIN-M futures ``U``/``u``/``pu``),
``bookTicker``, ``trade``, ``aggTrade`` and the REST depth snapshot
(``{"lastUpdateId":..,"bids":..,"asks":..}``), bare or inside the combined-stream
envelope ``{"stream":"btcusdt@depth","data":{...}}``. Other events (kline, 24hrTicker,
subscription replies) are valid JSON and come back as ``BK_IGNORED``.

Rules (anything else is a ``DecodeError`` naming the field and byte offset):
- fields may come in any order, with any whitespace; unknown fields are skipped;
  a field the decoder reads may not appear twice;
- prices and sizes are decimal strings (or JSON numbers) that must be whole numbers of
  the instrument's tick / lot; level arrays are exactly ``[price, qty]``;
- ``E``/``T`` are epoch milliseconds (stored as ns); ids are int64;
- ``s``, when present, must equal the instrument's symbol (unless ``check_symbol``
  is off).
"""
from libc.stdint cimport int32_t, int64_t, uint32_t
from cpython.buffer cimport PyBuffer_Release
from cpython.mem cimport PyMem_Realloc, PyMem_Free

from engine._core.types cimport LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument
from engine._core.jscan cimport (
    JsonCursor, JsonSpan, JsonStatus, JsonKind, js_init, js_init_buffer, js_fail, js_peek,
    js_enter_object, js_enter_array, js_next_member, js_next_element, js_skip_value,
    js_expect_end, js_read_string, js_read_int64, js_read_bool, js_read_steps,
    js_read_levels, js_span_eq, js_unescape, js_raise,
    JS_OK, JS_END, JS_WRONG_TYPE, JS_OVERFLOW, JS_BAD_FIELD, JS_MISSING_FIELD,
    JS_DUPLICATE, JS_TOO_LONG, JK_OBJECT, JK_ARRAY, JK_STRING, JK_NUMBER,
)

# Field ids: bit positions in the seen-mask and indexes of FIELD_NAMES.
cdef enum:  # Field
    F_NONE = -1
    F_e = 0
    F_E
    F_T
    F_s
    F_U
    F_u
    F_pu
    F_b
    F_a
    F_B
    F_A
    F_t
    F_p
    F_q
    F_m
    F_f
    F_l
    F_lastUpdateId
    F_bids
    F_asks
    F_COUNT

FIELD_NAMES = ("e", "E", "T", "s", "U", "u", "pu", "b", "a", "B", "A", "t", "p", "q", "m",
               "f", "l", "lastUpdateId", "bids", "asks")

# Event types named by "e".
cdef enum EventType:
    EV_NONE = 0
    EV_DEPTH
    EV_BOOK_TICKER
    EV_TRADE
    EV_AGG_TRADE
    EV_OTHER

KIND_NAMES = ("ignored", "depth", "snapshot", "book_ticker", "trade", "agg_trade")
MARKETS = {"spot": BM_SPOT, "usdm": BM_USDM, "coinm": BM_COINM}

# Largest epoch-milliseconds value whose nanoseconds fit int64.
cdef int64_t MAX_MS = 9223372036854

# Everything one pass collects. Lives on decode_c's stack.
ctypedef struct Scan:
    uint32_t seen                 # bit per Field
    Py_ssize_t pos[<int>F_COUNT]  # byte offset of each field's value
    int event
    bint b_levels                 # "b"/"a" were arrays (depth) rather than scalars
    bint a_levels
    bint a_is_id                  # "a" was an integer (aggTrade id)
    int field                     # field being read when an error happened
    int64_t E_ms, T_ms, U, u, pu, t, f, l, last_update_id, a_id
    int64_t b_px, B_qty, a_px, A_qty, p_px, q_qty
    bint m
    Py_ssize_t n_levels


cdef inline int _key_field(const JsonCursor* c, const JsonSpan* key) noexcept nogil:
    # Map a key to its Field id (F_NONE for fields the decoder does not read).
    cdef char tmp[16]
    cdef const char* k
    cdef Py_ssize_t n
    if key.has_escapes:
        if js_unescape(c, key, tmp, 16, &n) != JS_OK:
            return F_NONE
        k = tmp
    else:
        k = c.buf + key.start
        n = key.len
    if n == 1:
        if k[0] == c'e': return F_e
        if k[0] == c'E': return F_E
        if k[0] == c'T': return F_T
        if k[0] == c's': return F_s
        if k[0] == c'U': return F_U
        if k[0] == c'u': return F_u
        if k[0] == c'b': return F_b
        if k[0] == c'a': return F_a
        if k[0] == c'B': return F_B
        if k[0] == c'A': return F_A
        if k[0] == c't': return F_t
        if k[0] == c'p': return F_p
        if k[0] == c'q': return F_q
        if k[0] == c'm': return F_m
        if k[0] == c'f': return F_f
        if k[0] == c'l': return F_l
        return F_NONE
    if n == 2 and k[0] == c'p' and k[1] == c'u':
        return F_pu
    if n == 4 and k[0] == c'b' and k[1] == c'i' and k[2] == c'd' and k[3] == c's':
        return F_bids
    if n == 4 and k[0] == c'a' and k[1] == c's' and k[2] == c'k' and k[3] == c's':
        return F_asks
    if n == 12 and k[0] == c'l' and k[1] == c'a' and k[4] == c'U' and k[10] == c'I':
        if k[2] == c's' and k[3] == c't' and k[5] == c'p' and k[6] == c'd' and k[7] == c'a' \
                and k[8] == c't' and k[9] == c'e' and k[11] == c'd':
            return F_lastUpdateId
    return F_NONE


# --- one-pass decode, module-level so the .pxd stays the public contract -----


cdef str _error_context(BinanceDecoder self, int field):
    if 0 <= field < F_COUNT:
        return f"binance {self.instrument.symbol} field {FIELD_NAMES[field]!r}"
    return f"binance {self.instrument.symbol} frame"


cdef inline JsonStatus _levels(BinanceDecoder self, JsonCursor* c, Scan* s, int32_t side) noexcept nogil:
    # decode() reserved n // 6 + 2 rows, more than any frame of n bytes can hold.
    return js_read_levels(c, self.price_decimals, self.tick_units, self.qty_decimals,
                          self.lot_units, False, side, self.levels, self.capacity, &s.n_levels)


cdef JsonStatus _ms(BinanceDecoder self, JsonCursor* c, int64_t* out) noexcept nogil:
    cdef Py_ssize_t start = c.pos
    cdef JsonStatus st = js_read_int64(c, False, out)
    if st == JS_OK and (out[0] < 0 or out[0] > MAX_MS):
        return js_fail(c, JS_OVERFLOW, start)
    return st


cdef JsonStatus _member(BinanceDecoder self, JsonCursor* c, Scan* s, int field) noexcept nogil:
    # Read the value of one known field (cursor at the value).
    cdef JsonSpan span
    cdef JsonStatus st
    cdef JsonKind kind
    if s.seen & (1u << field):
        return js_fail(c, JS_DUPLICATE, c.pos)
    s.seen |= 1u << field
    kind = js_peek(c)
    s.pos[field] = c.pos
    s.field = field
    if field == F_e:
        st = js_read_string(c, &span)
        if st == JS_OK:
            if js_span_eq(c, &span, b"depthUpdate", 11):
                s.event = EV_DEPTH
            elif js_span_eq(c, &span, b"bookTicker", 10):
                s.event = EV_BOOK_TICKER
            elif js_span_eq(c, &span, b"trade", 5):
                s.event = EV_TRADE
            elif js_span_eq(c, &span, b"aggTrade", 8):
                s.event = EV_AGG_TRADE
            else:
                s.event = EV_OTHER
        return st
    if field == F_E:
        return _ms(self, c, &s.E_ms)
    if field == F_T:
        return _ms(self, c, &s.T_ms)
    if field == F_s:
        st = js_read_string(c, &span)
        if st == JS_OK and self.check_symbol and not js_span_eq(
                c, &span, self.symbol_ptr, self.symbol_len):
            return js_fail(c, JS_BAD_FIELD, span.start)
        return st
    if field == F_U:
        return js_read_int64(c, False, &s.U)
    if field == F_u:
        return js_read_int64(c, False, &s.u)
    if field == F_pu:
        return js_read_int64(c, False, &s.pu)
    if field == F_t:
        return js_read_int64(c, False, &s.t)
    if field == F_f:
        return js_read_int64(c, False, &s.f)
    if field == F_l:
        return js_read_int64(c, False, &s.l)
    if field == F_lastUpdateId:
        return js_read_int64(c, False, &s.last_update_id)
    if field == F_b:
        if kind == JK_ARRAY:
            s.b_levels = True
            return _levels(self, c, s, SIDE_BID)
        return js_read_steps(c, self.price_decimals, self.tick_units, &s.b_px)
    if field == F_a:
        if kind == JK_ARRAY:
            s.a_levels = True
            return _levels(self, c, s, SIDE_ASK)
        if kind == JK_NUMBER:
            s.a_is_id = True
            return js_read_int64(c, False, &s.a_id)
        return js_read_steps(c, self.price_decimals, self.tick_units, &s.a_px)
    if field == F_bids:
        return _levels(self, c, s, SIDE_BID)
    if field == F_asks:
        return _levels(self, c, s, SIDE_ASK)
    if field == F_B:
        return js_read_steps(c, self.qty_decimals, self.lot_units, &s.B_qty)
    if field == F_A:
        return js_read_steps(c, self.qty_decimals, self.lot_units, &s.A_qty)
    if field == F_p:
        return js_read_steps(c, self.price_decimals, self.tick_units, &s.p_px)
    if field == F_q:
        return js_read_steps(c, self.qty_decimals, self.lot_units, &s.q_qty)
    if field == F_m:
        return js_read_bool(c, &s.m)
    return js_skip_value(c)


cdef JsonStatus _object(BinanceDecoder self, JsonCursor* c, Scan* s, bint top) noexcept nogil:
    # Walk one object's members. At the top level "stream" and "data" form the
    # combined-stream envelope; everything else is an event field.
    cdef Py_ssize_t count = 0
    cdef JsonSpan key
    cdef JsonStatus st = js_enter_object(c)
    cdef int field
    cdef bint envelope = False
    cdef uint32_t bare_fields = 0
    while st == JS_OK:
        st = js_next_member(c, &count, &key)
        if st != JS_OK:
            break
        if top and js_span_eq(c, &key, b"data", 4) and js_peek(c) == JK_OBJECT:
            if envelope:
                return js_fail(c, JS_DUPLICATE, key.start)
            envelope = True
            st = _object(self, c, s, False)
            continue
        if top and js_span_eq(c, &key, b"stream", 6):
            st = js_skip_value(c)
            continue
        field = _key_field(c, &key)
        if field == F_NONE:
            st = js_skip_value(c)
        else:
            st = _member(self, c, s, field)
            if top:
                bare_fields |= 1u << field
    if st != JS_END:
        return st
    if envelope and bare_fields:
        s.field = F_NONE
        return js_fail(c, JS_BAD_FIELD, c.pos)   # event fields beside "data"
    return JS_OK


cdef JsonStatus _require(BinanceDecoder self, JsonCursor* c, Scan* s, uint32_t mask) noexcept nogil:
    cdef int k
    if s.seen & mask == mask:
        return JS_OK
    for k in range(F_COUNT):
        if mask & (1u << k) and not s.seen & (1u << k):
            s.field = k
            break
    return js_fail(c, JS_MISSING_FIELD, c.pos)      # where the frame ended without it


cdef JsonStatus _wrong(BinanceDecoder self, JsonCursor* c, Scan* s, int field) noexcept nogil:
    s.field = field
    return js_fail(c, JS_WRONG_TYPE, s.pos[field])


cdef JsonStatus _finish(BinanceDecoder self, JsonCursor* c, Scan* s, int* kind) noexcept nogil:
    # Schema check per event, then publish into depth / ticker / trade.
    cdef JsonStatus st
    cdef uint32_t need
    s.field = F_NONE
    if s.event == EV_DEPTH:
        need = (1u << F_U) | (1u << F_u) | (1u << F_b) | (1u << F_a)
        if self.market != BM_SPOT:
            need |= 1u << F_pu
        st = _require(self, c, s, need)
        if st != JS_OK:
            return st
        if not s.b_levels:
            return _wrong(self, c, s, F_b)
        if not s.a_levels:
            return _wrong(self, c, s, F_a)
        if s.U > s.u:
            s.field = F_U
            return js_fail(c, JS_BAD_FIELD, s.pos[F_U])
        self.depth.first_update_id = s.U
        self.depth.final_update_id = s.u
        self.depth.prev_final_update_id = s.pu
        self.depth.event_ts_ns = s.E_ms * 1000000 if s.E_ms >= 0 else -1
        self.depth.transact_ts_ns = s.T_ms * 1000000 if s.T_ms >= 0 else -1
        self.depth.n_levels = s.n_levels
        kind[0] = BK_DEPTH
        return JS_OK
    if s.event == EV_NONE and s.seen & (1u << F_lastUpdateId):
        st = _require(self, c, s, (1u << F_bids) | (1u << F_asks))
        if st != JS_OK:
            return st
        if s.seen & ((1u << F_b) | (1u << F_a)):
            s.field = F_b if s.seen & (1u << F_b) else F_a
            return js_fail(c, JS_BAD_FIELD, s.pos[s.field])
        self.depth.first_update_id = s.last_update_id
        self.depth.final_update_id = s.last_update_id
        self.depth.prev_final_update_id = -1
        self.depth.event_ts_ns = s.E_ms * 1000000 if s.E_ms >= 0 else -1
        self.depth.transact_ts_ns = s.T_ms * 1000000 if s.T_ms >= 0 else -1
        self.depth.n_levels = s.n_levels
        kind[0] = BK_SNAPSHOT
        return JS_OK
    if s.event == EV_BOOK_TICKER or (s.event == EV_NONE and s.seen & (1u << F_u)
                                     and s.seen & (1u << F_b)):
        st = _require(self, c, s, (1u << F_u) | (1u << F_b) | (1u << F_B) | (1u << F_a) | (1u << F_A))
        if st != JS_OK:
            return st
        if s.b_levels:
            return _wrong(self, c, s, F_b)
        if s.a_levels or s.a_is_id:
            return _wrong(self, c, s, F_a)
        self.ticker.update_id = s.u
        self.ticker.bid_price_ticks = s.b_px
        self.ticker.bid_qty_lots = s.B_qty
        self.ticker.ask_price_ticks = s.a_px
        self.ticker.ask_qty_lots = s.A_qty
        self.ticker.event_ts_ns = s.E_ms * 1000000 if s.E_ms >= 0 else -1
        kind[0] = BK_BOOK_TICKER
        return JS_OK
    if s.event == EV_TRADE or s.event == EV_AGG_TRADE:
        need = (1u << F_p) | (1u << F_q) | (1u << F_m)
        need |= (1u << F_t) if s.event == EV_TRADE else (1u << F_a)
        st = _require(self, c, s, need)
        if st != JS_OK:
            return st
        if s.event == EV_AGG_TRADE and not s.a_is_id:
            return _wrong(self, c, s, F_a)
        if s.p_px < 0:
            s.field = F_p
            return js_fail(c, JS_BAD_FIELD, s.pos[F_p])
        if s.q_qty < 0:
            s.field = F_q
            return js_fail(c, JS_BAD_FIELD, s.pos[F_q])
        self.trade.trade_id = s.t if s.event == EV_TRADE else s.a_id
        self.trade.price_ticks = s.p_px
        self.trade.qty_lots = s.q_qty
        # m: the buyer is the maker, so the seller took liquidity.
        self.trade.taker_side = SIDE_ASK if s.m else SIDE_BID
        self.trade.trade_ts_ns = s.T_ms * 1000000 if s.T_ms >= 0 else -1
        self.trade.event_ts_ns = s.E_ms * 1000000 if s.E_ms >= 0 else -1
        self.trade.first_trade_id = s.f
        self.trade.last_trade_id = s.l
        kind[0] = BK_TRADE if s.event == EV_TRADE else BK_AGG_TRADE
        return JS_OK
    kind[0] = BK_IGNORED
    return JS_OK


cdef class BinanceDecoder:
    """Decoder of Binance market-data frames for one instrument.

    ``BinanceDecoder(instrument, market="spot", *, check_symbol=True)``; ``market`` is
    ``"spot"``, ``"usdm"`` or ``"coinm"`` (futures diffs must carry ``pu``).
    Decoding is one pass over the frame, O(len), with no Python object per field or
    level; levels land in a scratch buffer owned by the decoder, grown to the largest
    frame seen. The C API (``decode``) is what ``BinanceBookSync`` uses;
    ``decode_frame`` is a Python face for tests and tools.
    """

    def __cinit__(self):
        self.levels = NULL
        self.capacity = 0

    def __init__(self, Instrument instrument not None, str market="spot", *, bint check_symbol=True):
        if market not in MARKETS:
            raise ValueError(f"market {market!r}: expected 'spot', 'usdm' or 'coinm'")
        self.instrument = instrument
        self.market = MARKETS[market]
        self.check_symbol = check_symbol
        self.symbol_utf8 = instrument.symbol.encode("utf-8")
        self.symbol_ptr = self.symbol_utf8
        self.symbol_len = len(self.symbol_utf8)
        self.price_decimals = instrument.price_decimals
        self.tick_units = instrument.tick_units
        self.qty_decimals = instrument.qty_decimals
        self.lot_units = instrument.lot_units
        self.reserve(64)

    def __dealloc__(self):
        PyMem_Free(self.levels)

    cdef int reserve(self, Py_ssize_t n_levels) except -1:
        """Grow the scratch to hold n_levels (never shrinks). The only allocation."""
        cdef LevelUpdate* grown
        if n_levels <= self.capacity:
            return 0
        grown = <LevelUpdate*>PyMem_Realloc(self.levels, <size_t>n_levels * sizeof(LevelUpdate))
        if grown == NULL:
            raise MemoryError()
        self.levels = grown
        self.capacity = n_levels
        return 0

    cdef int decode(self, const char* buf, Py_ssize_t n) except -1:
        cdef JsonCursor c
        cdef int kind = BK_IGNORED
        cdef JsonStatus st
        # A level needs at least 6 bytes ("[1,1],"), so this bound can never be exceeded.
        if n // 6 + 2 > self.capacity:
            self.reserve(n // 6 + 2)
        js_init(&c, buf, n)
        # decode_c could run without the GIL, but releasing it per frame costs more
        # than a typical frame's decode.
        st = self.decode_c(&c, &kind)
        if st != JS_OK:
            self.last_error = c
            self.last_error.buf = NULL      # the frame is only borrowed
            self.last_status = st
            js_raise(&c, st, _error_context(self, kind))
        return kind

    cdef JsonStatus decode_c(self, JsonCursor* c, int* kind) noexcept nogil:
        cdef Scan s
        cdef JsonStatus st
        s.seen = 0
        s.event = EV_NONE
        s.b_levels = False
        s.a_levels = False
        s.a_is_id = False
        s.field = F_NONE
        s.E_ms = -1
        s.T_ms = -1
        s.pu = -1
        s.f = -1
        s.l = -1
        s.n_levels = 0
        kind[0] = F_NONE
        st = _object(self, c, &s, True)
        if st == JS_OK:
            st = js_expect_end(c)
        if st != JS_OK:
            kind[0] = s.field
            return st
        st = _finish(self, c, &s, kind)
        if st != JS_OK:
            kind[0] = s.field
        return st

    # --- Python face (allocates; for tests and tools) -----------------------------

    def decode_frame(self, frame):
        """Decode one frame (bytes, bytearray or memoryview; read during the call only)
        and return a dict: ``kind`` ("depth", "snapshot", "book_ticker", "trade",
        "agg_trade", "ignored") plus that event's fields, levels as lists of
        ``(side, price_ticks, qty_lots)``. Raises DecodeError(reason, offset)."""
        cdef Py_buffer view
        cdef JsonCursor c
        cdef int kind
        cdef Py_ssize_t i
        js_init_buffer(&c, frame, &view)
        try:
            kind = self.decode(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        out = {"kind": KIND_NAMES[kind]}
        if kind == BK_DEPTH or kind == BK_SNAPSHOT:
            out.update(first_update_id=self.depth.first_update_id,
                       final_update_id=self.depth.final_update_id,
                       prev_final_update_id=self.depth.prev_final_update_id,
                       event_ts_ns=self.depth.event_ts_ns,
                       transact_ts_ns=self.depth.transact_ts_ns,
                       levels=[(self.levels[i].side, self.levels[i].price_ticks, self.levels[i].qty_lots)
                               for i in range(self.depth.n_levels)])
        elif kind == BK_BOOK_TICKER:
            out.update(update_id=self.ticker.update_id,
                       bid_price_ticks=self.ticker.bid_price_ticks, bid_qty_lots=self.ticker.bid_qty_lots,
                       ask_price_ticks=self.ticker.ask_price_ticks, ask_qty_lots=self.ticker.ask_qty_lots,
                       event_ts_ns=self.ticker.event_ts_ns)
        elif kind == BK_TRADE or kind == BK_AGG_TRADE:
            out.update(trade_id=self.trade.trade_id, price_ticks=self.trade.price_ticks,
                       qty_lots=self.trade.qty_lots, taker_side=self.trade.taker_side,
                       trade_ts_ns=self.trade.trade_ts_ns, event_ts_ns=self.trade.event_ts_ns,
                       first_trade_id=self.trade.first_trade_id, last_trade_id=self.trade.last_trade_id)
        return out

    def decode_kind(self, frame):
        """Decode one frame into the scratch buffer (validating everything, building no
        Python object per field) and return its kind as an int (see ``KIND_NAMES``).
        Raises DecodeError(reason, offset). O(len(frame))."""
        cdef Py_buffer view
        cdef JsonCursor c
        js_init_buffer(&c, frame, &view)
        try:
            return self.decode(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    @property
    def scratch_capacity(self):
        """Levels the scratch buffer holds (grows to the largest frame seen)."""
        return self.capacity
