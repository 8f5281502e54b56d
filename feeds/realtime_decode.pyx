"""Realtime venue hot-message decoder (market:price, trade:created) on jscan.

Wire format in ``feeds.realtime``. One frame is one JSON object. The frame is scanned
once: the fields of the hot messages are kept as spans into the frame and converted
after the scan (the symbol, which gives the decimals, and the type, which says whether
the fields are hot at all, may come after them); nothing is written before every field
converted, so a bad message changes nothing.
"""
from libc.stdint cimport int64_t

from engine._core.instrument cimport Instrument
from engine._core.jscan cimport (
    JsonCursor, JsonSpan, JsonStatus,
    JS_OK, JS_END, JS_DUPLICATE, JS_WRONG_TYPE, JK_STRING,
    js_init, js_peek, js_fail, js_enter_object, js_next_member, js_skip_value,
    js_expect_end, js_read_string, js_read_int64, js_read_steps, js_span_is,
    js_span_to_str, js_raise, js_claim, js_match_word,
)
from feeds._decode_common cimport fill_lens, span_is_bytes, taker_side, check_field

from engine.errors import DecodeError

cdef enum:
    PCT_DEC = 6

#: changePercent is kept exactly in units of 10**-PCT_DECIMALS percent.
PCT_DECIMALS = PCT_DEC

cdef enum:
    K_NONE = 0
    K_PRICE = 1
    K_TRADE = 2
    K_OTHER = 3

# Fields of the hot messages: index I_* in the key table, bit F_* = 1 << I_* (which
# fields a message carried).
cdef enum:
    I_TS = 0
    I_SYMBOL = 1
    I_PRICE = 2
    I_CHANGE = 3
    I_PCT = 4
    I_QTY = 5
    I_SIDE = 6
    I_ID = 7
    N_FIELDS = 8
    F_TS = 1 << I_TS
    F_SYMBOL = 1 << I_SYMBOL
    F_PRICE = 1 << I_PRICE
    F_CHANGE = 1 << I_CHANGE
    F_PCT = 1 << I_PCT
    F_QTY = 1 << I_QTY
    F_SIDE = 1 << I_SIDE
    F_ID = 1 << I_ID

cdef const char* FIELD_WORDS[N_FIELDS]
FIELD_WORDS[:] = [b"ts", b"symbol", b"price", b"change", b"changePercent", b"qty", b"side", b"id"]
cdef Py_ssize_t FIELD_LENS[N_FIELDS]
fill_lens(FIELD_WORDS, FIELD_LENS, N_FIELDS)

cdef Instrument _PCT = Instrument("changePercent", "0.000001", "1")


cdef class Quote:
    """Exact last price of ``symbol``: ``last_price_ticks``, ``change_ticks`` (signed),
    ``change_pct_units`` (changePercent in 10**-6 %), ``ts_ns`` (venue time, 0 if not
    sent), ``recv_ns`` and ``updates``. Updated in place by the decoder; callbacks get
    this object itself (copy what you keep). ``last_price``/``change``/
    ``change_percent`` format the integers back to exact decimal strings."""

    def __init__(self, Instrument instrument not None):
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.symbol_bytes = instrument.symbol.encode()

    @property
    def last_price(self):
        """The last price as an exact decimal string (None before the first update)."""
        return self.instrument.ticks_to_price(self.last_price_ticks) if self.updates else None

    @property
    def change(self):
        """The change as an exact decimal string (None before the first update)."""
        return self.instrument.ticks_to_price(self.change_ticks) if self.updates else None

    @property
    def change_percent(self):
        """changePercent as an exact decimal string (None before the first update)."""
        return _PCT.ticks_to_price(self.change_pct_units, True) if self.updates else None

    def __repr__(self):
        return (f"Quote({self.symbol} last={self.last_price} change={self.change} "
                f"({self.change_percent}%) updates={self.updates})")


cdef class RealtimeDecoder:
    """Decodes realtime frames: market:price into the symbol's Quote (then
    ``venue.quote_updated(quote, recv_ns)`` when ``emit_quotes``), trade:created into an
    ``engine.Trade`` through ``dispatch.trade`` (kline aggregator, then on_trade);
    every other type goes to ``venue.on_message(type, raw_bytes, recv_ns)``.

    ``on_frame_c`` (C, called by the session's listener with picows' buffer) is the
    hot path, ``feed(frame, recv_ns)`` its Python entry; O(frame length). A message longer than
    ``max_message_bytes`` is refused with DecodeError (the protocol's limit; the
    connection stays up). Bad messages raise DecodeError and change nothing."""

    def __init__(self, venue, Dispatch dispatch not None, trade_type, quotes, Py_ssize_t max_message_bytes):
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.venue = venue
        self.dispatch = dispatch
        self.trade_type = trade_type
        self.quotes = list(quotes)
        for q in self.quotes:
            if not isinstance(q, Quote):
                raise TypeError(f"quotes must hold Quote objects, got {type(q).__name__}")
        self.max_message_bytes = max_message_bytes
        self.emit_quotes = False

    @property
    def quote_list(self):
        """The Quotes of the subscribed symbols (a new list)."""
        return list(self.quotes)

    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """Decode one WebSocket message buf[0:n] (BORROWED from picows' read buffer:
        valid for this call only). ``feed(frame, recv_ns)`` is the Python entry."""
        if n > self.max_message_bytes:
            self.oversize += 1
            raise DecodeError(f"realtime: message of {n} bytes exceeds the maximum "
                              f"message size of {self.max_message_bytes} bytes; refused", -1)
        return self.decode(buf, n, recv_ns)

    cdef Quote find(self, const JsonCursor* c, const JsonSpan* span):
        # A few symbols per connection: a linear scan (a length check and memcmp unless
        # the span holds escapes).
        cdef Quote q
        for q in self.quotes:
            if span_is_bytes(c, span, q.symbol_bytes):
                return q
        return None

    cdef int decode(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        cdef JsonCursor c
        cdef JsonSpan key, type_span
        cdef JsonSpan spans[N_FIELDS]   # string fields by I_* (I_TS unused: an integer)
        cdef Py_ssize_t count = 0
        cdef int kind = K_NONE, idx
        cdef unsigned int seen = 0, strings_bad = 0
        cdef Py_ssize_t at[N_FIELDS]    # value positions by I_*
        cdef Py_ssize_t dup_pos = -1     # first repeated field (an error in a hot message)
        cdef bint ts_deferred = False    # ts came before type: read at at[I_TS] after the scan
        cdef int64_t ts_ns = 0, price_ticks = 0, change_ticks = 0, pct_units = 0, qty_lots = 0
        cdef int side = 0
        cdef JsonStatus st
        cdef Quote q
        cdef Instrument inst
        js_init(&c, buf, n)
        st = js_enter_object(&c)
        while st == JS_OK:
            st = js_next_member(&c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(&c, &key, b"type", 4):
                if kind != K_NONE:
                    st = js_fail(&c, JS_DUPLICATE, key.start)
                    break
                st = js_read_string(&c, &type_span)
                if st == JS_OK:
                    if js_span_is(&c, &type_span, b"market:price", 12):
                        kind = K_PRICE
                    elif js_span_is(&c, &type_span, b"trade:created", 13):
                        kind = K_TRADE
                    else:
                        kind = K_OTHER
                continue
            idx = js_match_word(&c, &key, FIELD_WORDS, FIELD_LENS, N_FIELDS)
            if idx < 0 or kind == K_OTHER:
                st = js_skip_value(&c)  # cold messages are validated here, decoded by the venue
                continue
            if kind != K_NONE:
                # A hot message (the usual order: type first): read each field as it comes.
                st = js_claim(&c, &key, &seen, 1u << idx)
                if st != JS_OK:
                    break
                if idx == I_TS:
                    st = js_read_int64(&c, False, &ts_ns)
                else:
                    st = js_read_string(&c, &spans[idx])
                continue
            # Before "type" is known these fields may belong to a cold message with other
            # types or repeats: nothing about them is an error until the type says the
            # message is hot. A string is kept as its span; anything else (and ts,
            # converted once the message proved hot) by its position.
            if seen & (1u << idx):
                if dup_pos < 0:
                    dup_pos = key.start
                st = js_skip_value(&c)
                continue
            seen |= 1u << idx
            at[idx] = c.pos
            if idx == I_TS:
                ts_deferred = True
                st = js_skip_value(&c)
            elif js_peek(&c) == JK_STRING:
                st = js_read_string(&c, &spans[idx])
            else:
                strings_bad |= 1u << idx
                st = js_skip_value(&c)
        if st == JS_END:
            st = js_expect_end(&c)
        if st != JS_OK:
            js_raise(&c, st, "realtime message")
        if kind == K_OTHER:
            self.cold += 1
            self.venue.on_message(js_span_to_str(&c, &type_span), buf[:n], recv_ns)
            return 0
        if kind == K_NONE:
            raise DecodeError("realtime: message without type", 0)
        if dup_pos >= 0:
            js_raise(&c, js_fail(&c, JS_DUPLICATE, dup_pos), "realtime message")
        if strings_bad & ~F_TS:   # a field of the hot message that is not a string
            idx = 0
            while not strings_bad & (1u << idx) or idx == I_TS:
                idx += 1
            js_raise(&c, js_fail(&c, JS_WRONG_TYPE, at[idx]), f"realtime message {FIELD_WORDS[idx].decode()}")
        if ts_deferred:
            c.pos = at[I_TS]
            check_field(&c, js_read_int64(&c, False, &ts_ns), "realtime", "message", "ts")
        if kind == K_PRICE:
            if seen & (F_SYMBOL | F_PRICE | F_CHANGE | F_PCT) != (F_SYMBOL | F_PRICE | F_CHANGE | F_PCT):
                raise DecodeError("realtime market:price needs symbol, price, change and changePercent", 0)
        elif seen & (F_SYMBOL | F_PRICE | F_QTY | F_SIDE | F_ID) != (F_SYMBOL | F_PRICE | F_QTY | F_SIDE | F_ID):
            raise DecodeError("realtime trade:created needs symbol, id, price, qty and side", 0)
        q = self.find(&c, &spans[I_SYMBOL])
        if q is None:
            self.unknown_symbols += 1
            return 0
        inst = q.instrument
        check_field(&c, js_read_steps(_at(&c, &spans[I_PRICE]), inst.price_decimals, inst.tick_units,
                                      &price_ticks), "realtime", q.symbol, "price")
        if price_ticks <= 0:
            raise DecodeError(f"realtime {q.symbol}: price must be positive, got "
                              f"{js_span_to_str(&c, &spans[I_PRICE])!r}", spans[I_PRICE].start)
        if kind == K_PRICE:
            check_field(&c, js_read_steps(_at(&c, &spans[I_CHANGE]), inst.price_decimals, inst.tick_units,
                                          &change_ticks), "realtime", q.symbol, "change")
            check_field(&c, js_read_steps(_at(&c, &spans[I_PCT]), PCT_DEC, 1, &pct_units),
                        "realtime", q.symbol, "changePercent")
            q.last_price_ticks = price_ticks
            q.change_ticks = change_ticks
            q.change_pct_units = pct_units
            q.ts_ns = ts_ns
            q.recv_ns = recv_ns
            q.updates += 1
            self.prices += 1
            if self.emit_quotes:
                self.venue.quote_updated(q, recv_ns)
            return 0
        check_field(&c, js_read_steps(_at(&c, &spans[I_QTY]), inst.qty_decimals, inst.lot_units, &qty_lots),
                    "realtime", q.symbol, "qty")
        if qty_lots <= 0:
            raise DecodeError(f"realtime {q.symbol}: trade qty must be positive", spans[I_QTY].start)
        side = taker_side(&c, &spans[I_SIDE])
        if side == 0:
            raise DecodeError(f"realtime {q.symbol}: trade side must be buy or sell, got "
                              f"{js_span_to_str(&c, &spans[I_SIDE])!r}", spans[I_SIDE].start)
        self.trades += 1
        # The id as text only when a trade callback will see it (Dispatch.trade_c).
        self.dispatch.trade_c(inst, js_span_to_str(&c, &spans[I_ID]) if self.dispatch.trade_cbs else "",
                              price_ticks, qty_lots, side, ts_ns, recv_ns, self.trade_type)
        return 0


cdef inline JsonCursor* _at(JsonCursor* c, const JsonSpan* span) noexcept nogil:
    """Point the cursor at the opening quote of a string span read earlier, so
    js_read_steps converts it in place (the frame is still borrowed)."""
    c.pos = span.start - 1
    return c
