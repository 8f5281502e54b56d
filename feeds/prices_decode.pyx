"""Prices (Tradevest style) frame decoder: PRICES frames straight from picows' buffer
into the engine's books. The wire format is documented in ``feeds.prices``.

A frame is applied whole or not at all: every market entry of a PRICES frame is
decoded into one scratch buffer and validated (numbers exact, levels best first,
no crossed market, no market twice) before the first book is replaced; then the
books are replaced (``OrderBook.replace_with``), then the book callbacks run.
"""
from cpython.mem cimport PyMem_RawFree
from libc.stdint cimport int32_t, int64_t, uint64_t

from engine._core.types cimport LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument
from engine._core.book cimport OrderBook, CROSS_ALLOW
from engine._core.jscan cimport (
    JsonCursor, JsonSpan, JsonStatus,
    JS_OK, JS_END, JS_BAD_FIELD, JS_MISSING_FIELD, JS_DUPLICATE,
    js_init, js_fail, js_enter_object, js_enter_array, js_next_member,
    js_next_element, js_skip_value, js_expect_end, js_read_string, js_read_steps,
    js_span_is, js_span_to_str, js_raise, js_claim,
)
from feeds._decode_common cimport scratch_grow, span_is_bytes

from engine.errors import DecodeError

# Message kinds (the "type" field).
cdef enum:
    MSG_NONE = 0
    MSG_PRICES = 1
    MSG_ERROR = 2
    MSG_OTHER = 3

# Smallest level object {"price":"1","quantity":"1"} plus its comma: 30 bytes.
DEF MIN_LEVEL_BYTES = 30

# Why read_side refused a level (its `why` output), for the error message.
cdef enum:
    WHY_NONE = 0
    WHY_ORDER = 1
    WHY_PRICE = 2
    WHY_QTY = 3
    WHY_MISSING = 4

cdef dict _WHY = {
    WHY_ORDER: "levels must be best first without repeats (asks ascending, bids descending)",
    WHY_PRICE: "price must be positive",
    WHY_QTY: "quantity must not be negative",
    WHY_MISSING: "a level needs price and quantity",
}


cdef class MarketBook:
    """A market the venue applies: ``market`` (venue name, e.g. "BTC-EUR"), its
    ``instrument`` and the engine's ``book``; counters ``replaces`` (entries applied),
    ``keepalives`` (entries with empty asks and bids) and ``last_recv_ns``."""

    def __init__(self, str market not None, Instrument instrument not None, OrderBook book not None):
        self.market = market
        self.market_bytes = market.encode()
        self.instrument = instrument
        self.book = book
        self.frame_gen = 0

    def __repr__(self):
        return f"MarketBook({self.market!r}, replaces={self.replaces}, keepalives={self.keepalives})"


cdef JsonStatus read_side(JsonCursor* c, int32_t price_decimals, int64_t tick_units,
                          int32_t qty_decimals, int64_t lot_units, int side,
                          LevelUpdate* out, Py_ssize_t capacity, Py_ssize_t* n,
                          int* why) noexcept nogil:
    cdef JsonSpan key
    cdef Py_ssize_t nel = 0, count, start
    cdef int64_t price_ticks = 0, qty_lots = 0, prev = 0
    cdef unsigned int seen
    cdef JsonStatus st = js_enter_array(c)
    while st == JS_OK:
        st = js_next_element(c, &nel)
        if st != JS_OK:
            break
        if n[0] >= capacity:  # cannot happen: the caller reserved len // MIN_LEVEL_BYTES
            return js_fail(c, JS_BAD_FIELD, c.pos)
        start = c.pos
        count = 0
        seen = 0
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"price", 5):
                st = js_claim(c, &key, &seen, 1)
                if st == JS_OK:
                    st = js_read_steps(c, price_decimals, tick_units, &price_ticks)
            elif js_span_is(c, &key, b"quantity", 8):
                st = js_claim(c, &key, &seen, 2)
                if st == JS_OK:
                    st = js_read_steps(c, qty_decimals, lot_units, &qty_lots)
            else:
                st = js_skip_value(c)
        if st != JS_END:
            return st
        st = JS_OK
        if seen != 3:
            why[0] = WHY_MISSING
            return js_fail(c, JS_MISSING_FIELD, start)
        # Prices are positive, sizes non-negative; levels strictly best first.
        if price_ticks <= 0 or qty_lots < 0:
            why[0] = WHY_PRICE if price_ticks <= 0 else WHY_QTY
            return js_fail(c, JS_BAD_FIELD, start)
        if nel > 1 and ((side == SIDE_BID and price_ticks >= prev) or
                        (side == SIDE_ASK and price_ticks <= prev)):
            why[0] = WHY_ORDER
            return js_fail(c, JS_BAD_FIELD, start)
        prev = price_ticks
        out[n[0]].price_ticks = price_ticks
        out[n[0]].qty_lots = qty_lots
        out[n[0]].side = side
        n[0] += 1
    return st


cdef class PricesDecoder:
    """Decodes the frames of ONE prices connection into the shared MarketBooks.

    ``on_frame_c`` (C, called by the session's listener with picows' buffer) is the
    hot path, ``feed(frame, recv_ns)`` its Python entry: O(frame length) scanning plus
    O(levels log levels) per replaced book. ``link`` receives the rare events:
    ``on_live()`` once, at the first PRICES frame of the connection;
    ``on_server_error(connection_id, message)`` for ERROR; ``on_unknown(type)`` for
    other message types. Raises DecodeError for a bad frame (no book changed)."""

    def __cinit__(self):
        self.scratch = NULL
        self.capacity = 0

    def __init__(self, link, Dispatch dispatch not None, markets):
        self.dispatch = dispatch
        self.touched = []
        self.gen = 0
        self.reset(link, markets)
        scratch_grow(<void**>&self.scratch, &self.capacity, 64, sizeof(LevelUpdate))

    def __dealloc__(self):
        PyMem_RawFree(self.scratch)

    def reset(self, link, markets):
        """A new connection: report to ``link``, apply ``markets`` (MarketBooks), not
        live until its first PRICES. Counters are kept. O(markets)."""
        markets = list(markets)
        for mb in markets:
            if not isinstance(mb, MarketBook):
                raise TypeError(f"markets must hold MarketBook objects, got {type(mb).__name__}")
        self.link = link
        self.markets = markets
        self.live = False

    @property
    def market_list(self):
        """The MarketBooks this connection applies (a new list)."""
        return list(self.markets)

    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """Decode one WebSocket message buf[0:n] (BORROWED from picows' read buffer:
        valid for this call only). ``feed(frame, recv_ns)`` is the Python entry."""
        scratch_grow(<void**>&self.scratch, &self.capacity, n // MIN_LEVEL_BYTES + 2, sizeof(LevelUpdate))
        return self.decode(buf, n, recv_ns)

    cdef MarketBook find_market(self, const JsonCursor* c, const JsonSpan* key):
        # A handful of markets per connection: a linear scan (a length check and memcmp
        # unless the key holds escapes).
        cdef MarketBook mb
        for mb in self.markets:
            if span_is_bytes(c, key, mb.market_bytes):
                return mb
        return None

    cdef int decode(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        cdef JsonCursor c
        cdef JsonSpan key, type_span, conn_span, msg_span
        cdef Py_ssize_t count = 0, prices_pos = -1
        cdef bint parsed = False, has_conn = False, has_msg = False, has_type = False
        cdef int kind = MSG_NONE
        cdef JsonStatus st
        js_init(&c, buf, n)
        st = js_enter_object(&c)
        while st == JS_OK:
            st = js_next_member(&c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(&c, &key, b"type", 4):
                if has_type:
                    st = js_fail(&c, JS_DUPLICATE, key.start)
                    break
                has_type = True
                st = js_read_string(&c, &type_span)
                if st == JS_OK:
                    if js_span_is(&c, &type_span, b"PRICES", 6):
                        kind = MSG_PRICES
                    elif js_span_is(&c, &type_span, b"ERROR", 5):
                        kind = MSG_ERROR
                    else:
                        kind = MSG_OTHER
            elif js_span_is(&c, &key, b"prices", 6):
                if parsed or prices_pos >= 0:
                    st = js_fail(&c, JS_DUPLICATE, key.start)
                    break
                if kind == MSG_PRICES:
                    # Usual field order: decode in this pass (applied only after the
                    # whole message validated).
                    self.read_prices(&c, recv_ns)
                    parsed = True
                else:
                    prices_pos = c.pos
                    st = js_skip_value(&c)
            elif js_span_is(&c, &key, b"connectionId", 12):
                st = js_read_string(&c, &conn_span)
                has_conn = True
            elif js_span_is(&c, &key, b"message", 7):
                st = js_read_string(&c, &msg_span)
                has_msg = True
            else:
                st = js_skip_value(&c)
        if st == JS_END:
            st = js_expect_end(&c)
        if st != JS_OK:
            js_raise(&c, st, "prices message")
        if kind == MSG_PRICES:
            if not parsed:
                if prices_pos < 0:
                    raise DecodeError("prices: PRICES message without prices", 0)
                c.pos = prices_pos
                self.read_prices(&c, recv_ns)
            self.apply(recv_ns)
        elif kind == MSG_ERROR:
            self.errors += 1
            self.link.on_server_error(js_span_to_str(&c, &conn_span) if has_conn else None,
                                      js_span_to_str(&c, &msg_span) if has_msg else "")
        elif kind == MSG_NONE:
            raise DecodeError("prices: message without type", 0)
        else:
            self.link.on_unknown(js_span_to_str(&c, &type_span))
        return 0

    cdef int read_prices(self, JsonCursor* c, int64_t recv_ns) except -1:
        """The ``prices`` object into scratch; raises DecodeError naming the market."""
        cdef JsonSpan key, mkey
        cdef Py_ssize_t count = 0, mcount, n = 0, before
        cdef MarketBook mb = None
        cdef Instrument inst
        cdef unsigned int seen
        cdef int side = SIDE_BID, why = WHY_NONE
        cdef JsonStatus st
        self.gen += 1
        self.touched.clear()
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            mb = self.find_market(c, &key)
            if mb is None:
                self.unknown_markets += 1
                st = js_skip_value(c)
                continue
            if mb.frame_gen == self.gen:
                st = js_fail(c, JS_DUPLICATE, key.start)
                break
            mb.frame_gen = self.gen
            mb.frame_start = n
            mb.frame_best_bid = -1
            mb.frame_best_ask = -1
            inst = mb.instrument
            mcount = 0
            seen = 0
            st = js_enter_object(c)
            while st == JS_OK:
                st = js_next_member(c, &mcount, &mkey)
                if st != JS_OK:
                    break
                if js_span_is(c, &mkey, b"asks", 4) or js_span_is(c, &mkey, b"bids", 4):
                    side = SIDE_ASK if js_span_is(c, &mkey, b"asks", 4) else SIDE_BID
                    st = js_claim(c, &mkey, &seen, 1u << side)
                    if st != JS_OK:
                        break
                    before = n
                    st = read_side(c, inst.price_decimals, inst.tick_units, inst.qty_decimals,
                                   inst.lot_units, side, self.scratch, self.capacity, &n, &why)
                    if st == JS_END:
                        st = JS_OK
                    if n > before:
                        if side == SIDE_BID:
                            mb.frame_best_bid = before
                        else:
                            mb.frame_best_ask = before
                else:
                    st = js_skip_value(c)
            if st == JS_END:
                st = JS_OK if seen == 3 else js_fail(c, JS_MISSING_FIELD, key.start)
            if st != JS_OK:
                break
            mb.frame_count = n - mb.frame_start
            self.touched.append(mb)
            mb = None
        if st != JS_END:
            if why != WHY_NONE:
                raise DecodeError(f"prices {mb.market} {'bids' if side == SIDE_BID else 'asks'}: "
                                  f"{_WHY[why]}", c.err_pos)
            js_raise(c, st, f"prices {mb.market}" if mb is not None else "prices")
        return 0

    cdef int apply(self, int64_t recv_ns) except -1:
        cdef MarketBook mb
        cdef Instrument inst
        cdef bint changed = False
        # Validate every market before the first book changes (whole frame or nothing).
        for mb in self.touched:
            if (mb.frame_best_bid >= 0 and mb.frame_best_ask >= 0
                    and mb.book.cross_policy != CROSS_ALLOW
                    and self.scratch[mb.frame_best_bid].price_ticks >= self.scratch[mb.frame_best_ask].price_ticks):
                inst = mb.instrument
                raise DecodeError(
                    f"prices {mb.market}: crossed book (best bid "
                    f"{inst.ticks_to_price(self.scratch[mb.frame_best_bid].price_ticks)} >= best ask "
                    f"{inst.ticks_to_price(self.scratch[mb.frame_best_ask].price_ticks)})", -1)
        for mb in self.touched:
            if mb.frame_count == 0:
                # Empty asks and bids: the once-a-second keep-alive. Never clears a book.
                mb.keepalives += 1
                continue
            # Cannot fail on validated levels (sorted, distinct, non-negative, uncrossed)
            # except for memory exhaustion.
            mb.book.replace_with(self.scratch + mb.frame_start, mb.frame_count)
            mb.replaces += 1
            mb.last_recv_ns = recv_ns
            changed = True
        if changed:
            self.frames_applied += 1
        else:
            self.keepalive_frames += 1
        if not self.live:
            self.live = True
            self.link.on_live()
        if changed:
            for mb in self.touched:
                if mb.frame_count:
                    self.dispatch.book(mb.book, recv_ns)
        return 0
