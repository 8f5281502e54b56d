"""Cadenza (Centrifugo JSON v2) frame decoder: frames straight from picows' buffer into
the core. The payload schemas are documented in ``feeds.cadenza``.

One frame may hold several JSON messages separated by ``\\n`` (JSON strings cannot hold
a raw newline, so splitting on it is exact). Each message is decoded and applied on its
own, whole or not at all: a bad message raises DecodeError after the messages before it
were applied, and nothing of the bad one is.
"""
from cpython.mem cimport PyMem_RawFree
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memchr, strlen

from engine._core.types cimport LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument
from engine._core.book cimport OrderBook
from engine._core.jscan cimport (
    JsonCursor, JsonSpan, JsonStatus,
    JS_OK, JS_END, JS_ERROR, JS_BAD_FIELD, JS_DUPLICATE,
    js_init, js_fail, js_enter_object, js_enter_array, js_next_member,
    js_next_element, js_skip_value, js_expect_end, js_read_string, js_read_int64,
    js_read_bool, js_read_null, js_read_levels, js_span_is, js_span_steps, js_span_to_str,
    js_raise, js_peek, js_find_key, js_status_message,
)
from feeds._decode_common cimport scratch_grow, span_is_bytes, read_taker_side, check_field, read_text

from engine.errors import BookError, DecodeError


#: Channel kinds for Python (the cdef enum values of cadenza_decode.pxd).
KIND_BOOK = CH_BOOK
KIND_TRADE = CH_TRADE
KIND_ACCOUNT = CH_ACCOUNT


# --- flat account objects ------------------------------------------------------------
# Account payloads are flat objects of strings (decimals, ids) and integers (ns, seq).
# read_flat() reads one in a single pass into per-field spans/ints described by a
# static table (FieldSpec, in the .pxd); `seen` gets bit i for each field present (a
# null counts as absent).

cdef enum:
    O_ID = 0
    O_CLIENT_ID = 1
    O_INSTRUMENT = 2
    O_SIDE = 3
    O_TYPE = 4
    O_STATUS = 5
    O_PRICE = 6
    O_STOP_PRICE = 7
    O_QTY = 8
    O_FILLED = 9
    O_COST = 10
    O_CREATED = 11
    O_UPDATED = 12
    O_SEQ = 13
    O_COUNT = 14
    F_ORDER_ID = 0
    F_TRADE_ID = 1
    F_INSTRUMENT = 2
    F_SIDE = 3
    F_PRICE = 4
    F_QTY = 5
    F_FEE = 6
    F_FEE_ASSET = 7
    F_TS = 8
    F_SEQ = 9
    F_COUNT = 10
    P_INSTRUMENT = 0
    P_QTY = 1
    P_AVG_ENTRY = 2
    P_REALIZED = 3
    P_SEQ = 4
    P_COUNT = 5
    B_ASSET = 0
    B_TOTAL = 1
    B_AVAILABLE = 2
    B_RESERVED = 3
    B_SEQ = 4
    B_COUNT = 5

# Trade publication fields (PubRead.seen).
cdef enum:
    T_PRICE = 1
    T_QTY = 2
    T_SIDE = 4
    T_ID = 8
    T_TS = 16
    T_ALL = 31

cdef unsigned int ORDER_REQUIRED = ((1u << O_ID) | (1u << O_INSTRUMENT) | (1u << O_SIDE) | (1u << O_STATUS)
                                    | (1u << O_QTY) | (1u << O_FILLED))
cdef unsigned int FILL_REQUIRED = ((1u << F_ORDER_ID) | (1u << F_TRADE_ID) | (1u << F_INSTRUMENT)
                                   | (1u << F_SIDE) | (1u << F_PRICE) | (1u << F_QTY))
cdef unsigned int POSITION_REQUIRED = (1u << P_INSTRUMENT) | (1u << P_QTY)

cdef FieldSpec ORDER_FIELDS[O_COUNT]
cdef FieldSpec FILL_FIELDS[F_COUNT]
cdef FieldSpec POSITION_FIELDS[P_COUNT]
cdef FieldSpec BALANCE_FIELDS[B_COUNT]


cdef void _spec(FieldSpec* f, const char* name, int kind) noexcept:
    f.name = name
    f.name_len = strlen(name)
    f.kind = kind

_spec(&ORDER_FIELDS[O_ID], "id", FIELD_STR)
_spec(&ORDER_FIELDS[O_CLIENT_ID], "clientId", FIELD_STR)
_spec(&ORDER_FIELDS[O_INSTRUMENT], "instrumentId", FIELD_STR)
_spec(&ORDER_FIELDS[O_SIDE], "side", FIELD_STR)
_spec(&ORDER_FIELDS[O_TYPE], "orderType", FIELD_STR)
_spec(&ORDER_FIELDS[O_STATUS], "status", FIELD_STR)
_spec(&ORDER_FIELDS[O_PRICE], "price", FIELD_STR)
_spec(&ORDER_FIELDS[O_STOP_PRICE], "stopPrice", FIELD_STR)
_spec(&ORDER_FIELDS[O_QTY], "qty", FIELD_STR)
_spec(&ORDER_FIELDS[O_FILLED], "filledQty", FIELD_STR)
_spec(&ORDER_FIELDS[O_COST], "cost", FIELD_STR)
_spec(&ORDER_FIELDS[O_CREATED], "createdTs", FIELD_INT)
_spec(&ORDER_FIELDS[O_UPDATED], "updatedTs", FIELD_INT)
_spec(&ORDER_FIELDS[O_SEQ], "seq", FIELD_INT)
_spec(&FILL_FIELDS[F_ORDER_ID], "orderId", FIELD_STR)
_spec(&FILL_FIELDS[F_TRADE_ID], "tradeId", FIELD_STR)
_spec(&FILL_FIELDS[F_INSTRUMENT], "instrumentId", FIELD_STR)
_spec(&FILL_FIELDS[F_SIDE], "side", FIELD_STR)
_spec(&FILL_FIELDS[F_PRICE], "price", FIELD_STR)
_spec(&FILL_FIELDS[F_QTY], "qty", FIELD_STR)
_spec(&FILL_FIELDS[F_FEE], "fee", FIELD_STR)
_spec(&FILL_FIELDS[F_FEE_ASSET], "feeAsset", FIELD_STR)
_spec(&FILL_FIELDS[F_TS], "ts", FIELD_INT)
_spec(&FILL_FIELDS[F_SEQ], "seq", FIELD_INT)
_spec(&POSITION_FIELDS[P_INSTRUMENT], "instrumentId", FIELD_STR)
_spec(&POSITION_FIELDS[P_QTY], "qty", FIELD_STR)
_spec(&POSITION_FIELDS[P_AVG_ENTRY], "avgEntryPrice", FIELD_STR)
_spec(&POSITION_FIELDS[P_REALIZED], "realizedPnl", FIELD_STR)
_spec(&POSITION_FIELDS[P_SEQ], "seq", FIELD_INT)
_spec(&BALANCE_FIELDS[B_ASSET], "asset", FIELD_STR)
_spec(&BALANCE_FIELDS[B_TOTAL], "total", FIELD_STR)
_spec(&BALANCE_FIELDS[B_AVAILABLE], "available", FIELD_STR)
_spec(&BALANCE_FIELDS[B_RESERVED], "reserved", FIELD_STR)
_spec(&BALANCE_FIELDS[B_SEQ], "seq", FIELD_INT)


cdef JsonStatus read_flat(JsonCursor* c, const FieldSpec* specs, int n_specs, JsonSpan* spans,
                          int64_t* ints, unsigned int* seen) noexcept nogil:
    """Read one flat object: each member named in `specs` into spans[i] (strings; null
    leaves it absent) or ints[i] (integers); others are skipped. A field read twice is
    JS_DUPLICATE. O(object length * n_specs)."""
    cdef Py_ssize_t count = 0
    cdef JsonSpan key
    cdef bint is_null
    cdef int i
    cdef JsonStatus st = js_enter_object(c)
    seen[0] = 0
    while st == JS_OK:
        st = js_next_member(c, &count, &key)
        if st != JS_OK:
            break
        i = 0
        while i < n_specs and not js_span_is(c, &key, specs[i].name, specs[i].name_len):
            i += 1
        if i == n_specs:
            st = js_skip_value(c)
            continue
        if seen[0] & (1u << i):
            st = js_fail(c, JS_DUPLICATE, key.start)
            break
        if specs[i].kind == FIELD_INT:
            st = js_read_int64(c, False, &ints[i])
        else:
            st = js_read_null(c, &is_null)
            if st != JS_OK or is_null:
                continue
            st = js_read_string(c, &spans[i])
        if st == JS_OK:
            seen[0] |= 1u << i
    return JS_OK if st == JS_END else st


cdef str read_code_text(JsonCursor* c, const char* text_key, Py_ssize_t text_len, int64_t* code,
                        bint* temporary, str context):
    """An error or disconnect object: "code" (int) into *code, the string member
    `text_key` returned ("" when absent), "temporary" (bool) into *temporary unless that
    is NULL (then it is skipped like any unknown member). DecodeError naming `context`
    for anything malformed. O(object length)."""
    cdef JsonSpan key
    cdef Py_ssize_t count = 0
    cdef str text = ""
    cdef JsonStatus st = js_enter_object(c)
    while st == JS_OK:
        st = js_next_member(c, &count, &key)
        if st != JS_OK:
            break
        if js_span_is(c, &key, b"code", 4):
            st = js_read_int64(c, False, code)
        elif js_span_is(c, &key, text_key, text_len):
            text = read_text(c, &st)
        elif temporary != NULL and js_span_is(c, &key, b"temporary", 9):
            st = js_read_bool(c, temporary)
        else:
            st = js_skip_value(c)
    if st != JS_END:
        js_raise(c, st, context)
    return text


cdef class Channel:
    """A subscribed channel: ``name``, ``kind`` (0 book, 1 trade, 2 account), its
    ``instrument``/``book``, and the recovery position ``offset``/``epoch``."""

    def __init__(self, str name, int kind, Instrument instrument=None, OrderBook book=None):
        if kind == CH_BOOK and book is None:
            raise ValueError(f"book channel {name!r} needs a book")
        self.name = name
        self.name_bytes = name.encode()
        self.kind = kind
        self.instrument = instrument
        self.book = book
        self.offset = -1
        self.epoch = ""
        self.synced = False
        self.need_fresh = False
        self.live = False
        self.last_seq = -1
        self.publications = 0

    def __repr__(self):
        return (f"Channel({self.name!r}, offset={self.offset}, epoch={self.epoch!r}, "
                f"synced={self.synced}, live={self.live})")


cdef class CadenzaDecoder:
    """Decodes the Cadenza frames of one feed; the channel table (offsets, epochs, book
    sync state) lives here and survives reconnects.

    ``on_frame_c`` (C, called by the session's listener with picows' buffer) is the hot
    path, ``feed(payload, recv_ns)`` its Python entry: O(frame length) scanning, the
    book change O(levels touched). Rare messages (connect reply, errors, disconnect pushes)
    go to methods of ``venue``; account publications are decoded field by field and
    passed to ``venue.on_order/on_fill/on_position/on_balance``."""

    def __cinit__(self):
        self.scratch = NULL
        self.capacity = 0

    def __init__(self, venue, Dispatch dispatch not None, trade_type, dict instruments not None):
        self.venue = venue
        self.dispatch = dispatch
        self.trade_type = trade_type
        self.instruments = instruments
        self.channels = []
        self.pending = {}
        scratch_grow(<void**>&self.scratch, &self.capacity, 64, sizeof(LevelUpdate))

    def __dealloc__(self):
        PyMem_RawFree(self.scratch)

    def add_channel(self, Channel ch not None):
        """Register a channel (before subscribing to it). O(1)."""
        self.channels.append(ch)
        return ch

    @property
    def channel_list(self):
        """The registered channels (a new list)."""
        return list(self.channels)

    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """Decode one WebSocket message buf[0:n] (BORROWED: valid for this call only).
        Each JSON message of the frame is applied or refused on its own: a bad one is
        counted and skipped and the messages after it still apply; then the first
        DecodeError is raised (the frame's other refusals are in ``rejected_messages``
        and the feed's ``decode_errors``). FeedError (a server disconnect) ends the frame."""
        cdef const char* p = buf
        cdef const char* end = buf + n
        cdef const char* nl
        first_error = None
        # A level needs at least 9 bytes (["1","1"],): n // 6 + 2 bounds them.
        scratch_grow(<void**>&self.scratch, &self.capacity, n // 6 + 2, sizeof(LevelUpdate))
        while p < end:
            nl = <const char*>memchr(p, b'\n', end - p)
            if nl == NULL:
                nl = end
            if nl - p > 0:
                try:
                    self.decode_message(p, nl - p, recv_ns)
                except DecodeError as exc:
                    self.rejected_messages += 1
                    if first_error is None:
                        first_error = exc
                    else:
                        self.dispatch.counters.decode_errors += 1   # the raised one is counted by the caller
            p = nl + 1
        if first_error is not None:
            raise first_error
        return 0

    cdef int decode_message(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """One JSON message: scanned whole (a push's publication read into ``self.pub``
        on the way), then, only if all of it is valid, applied."""
        cdef JsonCursor c
        cdef JsonSpan key
        cdef JsonStatus st
        cdef Py_ssize_t count = 0
        cdef int64_t cmd_id = 0
        cdef bint has_id = False
        cdef Py_ssize_t sub_pos = -1, err_pos = -1, connect_pos = -1, other_pos = -1, push_pos = -1
        cdef JsonSpan other_key
        js_init(&c, buf, n)
        # Whitespace-only message (e.g. "\r"): nothing to do.
        if js_peek(&c) == 0 and c.pos >= n:
            return 0
        self.pub_channel = None
        st = js_enter_object(&c)
        while st == JS_OK:
            st = js_next_member(&c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(&c, &key, b"push", 4):
                if push_pos >= 0:
                    st = js_fail(&c, JS_DUPLICATE, key.start)
                    break
                push_pos = c.pos
                self.read_push(&c)
            elif js_span_is(&c, &key, b"id", 2):
                st = js_read_int64(&c, False, &cmd_id)
                has_id = True
            elif js_span_is(&c, &key, b"subscribe", 9):
                sub_pos = c.pos
                st = js_skip_value(&c)
            elif js_span_is(&c, &key, b"error", 5):
                err_pos = c.pos
                st = js_skip_value(&c)
            elif js_span_is(&c, &key, b"connect", 7):
                connect_pos = c.pos
                st = js_skip_value(&c)
            else:
                other_pos = c.pos
                other_key = key
                st = js_skip_value(&c)
        if st == JS_END:
            st = js_expect_end(&c)
        if st != JS_OK:
            js_raise(&c, st, "cadenza message")
        # The whole message is valid: from here on it is applied.
        if push_pos >= 0:
            return self.apply_push(&c, recv_ns)
        if count == 0:
            self.pings += 1
            self.venue.on_ping()
            return 0
        if err_pos >= 0:
            c.pos = err_pos
            self.decode_error_reply(&c, cmd_id)
        elif sub_pos >= 0:
            ch = self.pending.pop(cmd_id, None) if has_id else None
            if ch is None:
                raise DecodeError(f"cadenza: subscribe reply for unknown command id {cmd_id}", sub_pos)
            c.pos = sub_pos
            self.decode_subscribe_reply(&c, <Channel>ch, recv_ns)
        elif connect_pos >= 0:
            c.pos = connect_pos
            st = js_skip_value(&c)  # validated already; hand the object over (rare message)
            self.venue.on_connect_reply(cmd_id, buf[connect_pos:c.pos])
        elif has_id:
            self.pending.pop(cmd_id, None)
            self.venue.on_reply(cmd_id, js_span_to_str(&c, &other_key) if other_pos >= 0 else "")
        return 0

    cdef int decode_error_reply(self, JsonCursor* c, int64_t cmd_id) except -1:
        cdef int64_t code = 0
        cdef bint temporary = False
        cdef str message = read_code_text(c, b"message", 7, &code, &temporary, "cadenza error reply")
        ch = self.pending.pop(cmd_id, None)
        self.venue.on_error_reply(cmd_id, code, message, temporary, ch)
        return 0

    cdef Channel find_channel(self, const JsonCursor* c, const JsonSpan* span):
        cdef Channel ch
        for ch in self.channels:
            if span_is_bytes(c, span, ch.name_bytes):
                return ch
        return None

    cdef int read_push(self, JsonCursor* c) except -1:
        """Scan a push object; its publication, if on a live channel, is read into
        ``self.pub`` (``self.pub_channel``); disconnect/unsubscribe positions are kept.
        Nothing is applied: apply_push does that once the message proved valid."""
        cdef JsonSpan key
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t pub_pos = -1
        cdef Channel ch
        cdef JsonStatus st = js_enter_object(c)
        self.pub_channel = None
        self.pub_unknown = False
        self.has_push_channel = False
        self.disc_pos = -1
        self.unsub_pos = -1
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"channel", 7):
                st = js_read_string(c, &self.push_channel)
                self.has_push_channel = True
            elif js_span_is(c, &key, b"pub", 3):
                if pub_pos != -1:
                    st = js_fail(c, JS_DUPLICATE, key.start)
                    break
                pub_pos = c.pos
                if self.has_push_channel:
                    # Usual field order: read in the same pass.
                    ch = self.find_channel(c, &self.push_channel)
                    if ch is None or not ch.live:
                        self.pub_unknown = True
                        st = js_skip_value(c)
                    else:
                        self.read_pub(c, ch, &self.pub)
                        self.pub_channel = ch
                else:
                    st = js_skip_value(c)
            elif js_span_is(c, &key, b"disconnect", 10):
                self.disc_pos = c.pos
                st = js_skip_value(c)
            elif js_span_is(c, &key, b"unsubscribe", 11):
                self.unsub_pos = c.pos
                st = js_skip_value(c)
            else:
                st = js_skip_value(c)  # join / leave / message / unknown: not used here
        if st != JS_END:
            js_raise(c, st, "cadenza push")
        if pub_pos >= 0 and self.pub_channel is None and not self.pub_unknown:
            # "pub" before "channel": read it now (the rest of the push is scanned).
            if not self.has_push_channel:
                raise DecodeError("cadenza push: pub without channel", pub_pos)
            ch = self.find_channel(c, &self.push_channel)
            if ch is None or not ch.live:
                self.pub_unknown = True
            else:
                # The caller continues after the push object: keep where it ends
                # (position and depth) around the look back.
                end = c[0]
                c.pos = pub_pos
                self.read_pub(c, ch, &self.pub)
                self.pub_channel = ch
                c[0] = end
        return 0

    cdef int apply_push(self, JsonCursor* c, int64_t recv_ns) except -1:
        """Apply what read_push found (the message is valid as a whole)."""
        cdef Channel ch = self.pub_channel
        if ch is not None:
            self.pub_channel = None
            self.apply_pub(c, ch, &self.pub, recv_ns)
        elif self.pub_unknown:
            self.unknown_channel += 1
        if self.disc_pos >= 0 or self.unsub_pos >= 0:
            self.decode_control_push(c, self.disc_pos, self.unsub_pos,
                                     js_span_to_str(c, &self.push_channel) if self.has_push_channel else "")
        return 0

    cdef int decode_control_push(self, JsonCursor* c, Py_ssize_t disc_pos, Py_ssize_t unsub_pos,
                                 str channel) except -1:
        cdef int64_t code = 0
        cdef str reason
        c.pos = disc_pos if disc_pos >= 0 else unsub_pos
        reason = read_code_text(c, b"reason", 6, &code, NULL, "cadenza control push")
        if disc_pos >= 0:
            self.venue.on_push_disconnect(code, reason)
        else:
            self.venue.on_push_unsubscribe(channel, code, reason)
        return 0

    cdef int read_pub(self, JsonCursor* c, Channel ch, PubRead* p) except -1:
        """Read one publication ``{"data":{...},"offset":N}`` of ``ch`` into *p (books:
        levels into the scratch; trades: converted fields). No state changes. A bad
        publication object is a DecodeError; a data object that is valid JSON but
        refused is recorded in p.data_st for apply_pub (see PubRead)."""
        cdef JsonSpan key, span
        cdef Py_ssize_t count = 0, dcount
        cdef JsonStatus st
        cdef int32_t side
        cdef Instrument inst = ch.instrument
        cdef JsonCursor at_data
        p.has_offset = False
        p.offset = -1
        p.pub_pos = c.pos
        p.data_pos = -1
        p.book_type = BOOK_NONE
        p.seq = -1
        p.ts_ns = 0
        p.n_levels = 0
        p.price_ticks = 0
        p.qty_lots = 0
        p.trade_side = 0
        p.seen = 0
        p.data_st = JS_OK
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"offset", 6):
                st = js_read_int64(c, False, &p.offset)
                p.has_offset = True
            elif js_span_is(c, &key, b"data", 4):
                if p.data_pos != -1:
                    st = js_fail(c, JS_DUPLICATE, key.start)
                    break
                p.data_pos = c.pos
                if ch.kind == CH_ACCOUNT:
                    st = js_skip_value(c)  # decoded by apply_pub, after the offset check
                    continue
                at_data = c[0]
                dcount = 0
                st = js_enter_object(c)
                while st == JS_OK:
                    st = js_next_member(c, &dcount, &key)
                    if st != JS_OK:
                        break
                    if ch.kind == CH_BOOK:
                        if js_span_is(c, &key, b"bids", 4) or js_span_is(c, &key, b"asks", 4):
                            side = SIDE_BID if js_span_is(c, &key, b"bids", 4) else SIDE_ASK
                            # The on_frame_c bound leaves room for every level of the frame.
                            st = js_read_levels(c, inst.price_decimals, inst.tick_units,
                                                inst.qty_decimals, inst.lot_units, False, side,
                                                self.scratch, self.capacity, &p.n_levels)
                        elif js_span_is(c, &key, b"type", 4):
                            st = js_read_string(c, &span)
                            if st == JS_OK:
                                if js_span_is(c, &span, b"delta", 5):
                                    p.book_type = BOOK_DELTA
                                elif js_span_is(c, &span, b"snapshot", 8):
                                    p.book_type = BOOK_SNAPSHOT
                                else:
                                    st = js_fail(c, JS_BAD_FIELD, span.start)
                        elif js_span_is(c, &key, b"seq", 3):
                            st = js_read_int64(c, False, &p.seq)
                        elif js_span_is(c, &key, b"ts", 2):
                            st = js_read_int64(c, False, &p.ts_ns)
                        else:
                            st = js_skip_value(c)
                    else:  # CH_TRADE
                        if js_span_is(c, &key, b"price", 5):
                            st = js_read_string(c, &span)
                            if st == JS_OK:
                                st = js_span_steps(c, &span, inst.price_decimals, inst.tick_units, &p.price_ticks)
                                p.seen |= T_PRICE
                        elif js_span_is(c, &key, b"qty", 3):
                            st = js_read_string(c, &span)
                            if st == JS_OK:
                                st = js_span_steps(c, &span, inst.qty_decimals, inst.lot_units, &p.qty_lots)
                                p.seen |= T_QTY
                        elif js_span_is(c, &key, b"side", 4):
                            st = read_taker_side(c, &p.trade_side)
                            p.seen |= T_SIDE
                        elif js_span_is(c, &key, b"id", 2):
                            st = js_read_string(c, &p.trade_id)
                            p.seen |= T_ID
                        elif js_span_is(c, &key, b"ts", 2):
                            st = js_read_int64(c, False, &p.ts_ns)
                            p.seen |= T_TS
                        else:
                            st = js_skip_value(c)
                if st == JS_END:
                    st = JS_OK
                elif st >= JS_ERROR:
                    # Refused data: record why, then step over the data object from its
                    # start (which also tells a refused value from broken JSON).
                    p.data_st = st
                    p.data_err_pos = c.err_pos
                    p.data_dec_status = c.dec_status
                    c[0] = at_data
                    st = js_skip_value(c)
            else:
                st = js_skip_value(c)
        if st != JS_END:
            js_raise(c, st, f"cadenza {ch.name} publication")
        return 0

    cdef int refuse_pub(self, Channel ch, PubRead* p, str reason, Py_ssize_t pos, object error=None) except -1:
        """A publication whose offset is the next one but whose payload is refused: its
        offset is consumed all the same (recovery must not replay it forever), it is
        counted, a book channel is marked out of sync and resubscribed fresh; then
        DecodeError (``error`` itself when given). Always raises."""
        self.rejected_publications += 1
        if p.has_offset:
            ch.offset = p.offset
        if ch.kind == CH_BOOK:
            ch.synced = False
            ch.need_fresh = True
            self.venue.on_gap(ch, f"{ch.name}: publication {p.offset} refused: {reason}", True)
        if error is not None:
            raise error
        raise DecodeError(f"cadenza {ch.name} publication {p.offset}: {reason}", pos)

    cdef str pub_problem(self, JsonCursor* c, Channel ch, PubRead* p, Py_ssize_t* pos):
        """Why a book or trade publication read by read_pub cannot be applied (its error
        offset in *pos), or None. Account data is checked when it is decoded."""
        if p.data_pos < 0:
            pos[0] = p.pub_pos
            return "publication without data"
        pos[0] = p.data_pos
        if p.data_st != JS_OK:
            c.err_pos = p.data_err_pos
            c.dec_status = p.data_dec_status
            pos[0] = p.data_err_pos
            return js_status_message(c, p.data_st)
        if ch.kind == CH_BOOK:
            if p.book_type == BOOK_NONE or p.seq < 0:
                return "book data needs type and seq"
        elif ch.kind == CH_TRADE:
            if p.seen != T_ALL:
                return "trade needs id, price, qty, side and ts"
            if p.price_ticks <= 0:
                return f"trade price must be positive, got {ch.instrument.ticks_to_price(p.price_ticks)}"
            if p.qty_lots <= 0:
                return "trade qty must be positive"
        return None

    cdef int apply_pub(self, JsonCursor* c, Channel ch, PubRead* p, int64_t recv_ns) except -1:
        """Apply a publication read by read_pub: offset rules (offset_ok), then a refused
        payload goes to refuse_pub (offset consumed); a refused payload of a stale or
        gapped publication is only reported. Leaves the cursor where it was."""
        cdef JsonCursor end
        cdef Py_ssize_t pos = -1
        cdef str problem = self.pub_problem(c, ch, p, &pos)
        if not self.offset_ok(ch, p.has_offset, p.offset):
            if problem is not None:
                raise DecodeError(f"cadenza {ch.name} publication {p.offset}: {problem}", pos)
            return 0
        if problem is not None:
            self.refuse_pub(ch, p, problem, pos)
        if ch.kind == CH_BOOK:
            return self.apply_book(ch, p, recv_ns)
        if ch.kind == CH_TRADE:
            if p.has_offset:
                ch.offset = p.offset
            ch.publications += 1
            # The id as text only when a trade callback will see it (Dispatch.trade_c).
            self.dispatch.trade_c(ch.instrument, js_span_to_str(c, &p.trade_id) if self.dispatch.trade_cbs else "",
                                  p.price_ticks, p.qty_lots, p.trade_side, p.ts_ns, recv_ns, self.trade_type)
            return 0
        end = c[0]
        c.pos = p.data_pos
        try:
            self.decode_account(c, ch, recv_ns)
        except DecodeError as exc:
            self.refuse_pub(ch, p, str(exc), -1, exc)
        finally:
            c[0] = end  # continue after the publication object
        if p.has_offset:
            ch.offset = p.offset
        ch.publications += 1
        return 0

    cdef bint offset_ok(self, Channel ch, bint has_offset, int64_t offset) except -1:
        """True when the publication is the next one. A stale one (at or below the
        applied offset, e.g. overlapping recovery) is skipped; a jump is a gap: the
        venue reconnects and recovers from the last applied offset."""
        if not has_offset or ch.offset < 0:
            return True
        if offset == ch.offset + 1:
            return True
        if offset <= ch.offset:
            self.stale_publications += 1
            return False
        self.venue.on_gap(ch, f"{ch.name}: offset {offset} after {ch.offset}", False)
        return False

    cdef int apply_book(self, Channel ch, PubRead* p, int64_t recv_ns) except -1:
        cdef OrderBook book = ch.book
        cdef bint was_resync
        cdef int64_t seq = p.seq
        if p.book_type == BOOK_SNAPSHOT:
            was_resync = not ch.synced and ch.last_seq >= 0
            try:
                book.replace_with(self.scratch, p.n_levels)
            except BookError as exc:
                self.refuse_pub(ch, p, f"snapshot seq {seq} rejected: {exc}", p.data_pos)
            ch.synced = True
            ch.need_fresh = False
            if was_resync:
                self.venue.on_resynced(ch)
        else:
            if not ch.synced:
                self.dropped_unsynced += 1
                if p.has_offset:
                    ch.offset = p.offset
                return 0
            if seq != ch.last_seq + 1:
                ch.synced = False
                ch.need_fresh = True
                if p.has_offset:
                    ch.offset = p.offset
                self.venue.on_gap(ch, f"{ch.name}: seq {seq} after {ch.last_seq}", True)
                return 0
            try:
                book.apply_updates(self.scratch, p.n_levels)
            except BookError as exc:
                # The book is unchanged (whole-or-nothing) but no longer trustworthy.
                ch.synced = False
                ch.need_fresh = True
                if p.has_offset:
                    ch.offset = p.offset
                self.venue.on_gap(ch, f"{ch.name}: delta seq {seq} rejected: {exc}", True)
                return 0
        ch.last_seq = seq
        book.last_update_id = seq
        book.event_ts_ns = p.ts_ns
        if p.has_offset:
            ch.offset = p.offset
        ch.publications += 1
        self.dispatch.book(book, recv_ns)
        return 0

    cdef int decode_subscribe_reply(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1:
        """A subscribe reply (the message was validated whole): the recovery position,
        then each recovered publication applied on its own (a refused one is counted
        and skipped, its offset consumed), then the channel is live; the first refusal
        is raised after that."""
        cdef JsonSpan key, span
        cdef Py_ssize_t count = 0, nel = 0
        cdef int64_t offset = -1
        cdef bint recovered = False, recoverable = False
        cdef Py_ssize_t pubs_pos = -1
        cdef str epoch = ""
        cdef JsonCursor at, after
        cdef PubRead pub
        cdef JsonStatus st = js_enter_object(c)
        cdef int64_t before = ch.offset
        cdef int64_t refused_before = self.rejected_publications
        first_error = None
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            if js_span_is(c, &key, b"offset", 6):
                st = js_read_int64(c, False, &offset)
            elif js_span_is(c, &key, b"epoch", 5):
                epoch = read_text(c, &st)
            elif js_span_is(c, &key, b"recovered", 9):
                st = js_read_bool(c, &recovered)
            elif js_span_is(c, &key, b"recoverable", 11):
                st = js_read_bool(c, &recoverable)
            elif js_span_is(c, &key, b"publications", 12):
                pubs_pos = c.pos
                st = js_skip_value(c)
            else:
                st = js_skip_value(c)
        if st != JS_END:
            js_raise(c, st, f"cadenza subscribe reply {ch.name}")
        if not recovered:
            # Nothing replayed: continue from the stream's top. A book waits for the
            # snapshot the server sends first; trades/account lost what was missed.
            if ch.kind == CH_BOOK:
                ch.synced = False
            ch.offset = offset
        if pubs_pos >= 0:
            c.pos = pubs_pos
            st = js_enter_array(c)
            while st == JS_OK:
                st = js_next_element(c, &nel)
                if st != JS_OK:
                    break
                at = c[0]
                st = js_skip_value(c)   # validated by the message scan: finds the end
                after = c[0]
                c[0] = at
                try:
                    self.read_pub(c, ch, &pub)
                    self.apply_pub(c, ch, &pub, recv_ns)
                except DecodeError as exc:
                    self.rejected_messages += 1
                    if first_error is None:
                        first_error = exc
                    else:
                        self.dispatch.counters.decode_errors += 1
                c[0] = after
            if st != JS_END:
                js_raise(c, st, f"cadenza subscribe reply {ch.name} publications")
        ch.live = True
        ch.epoch = epoch
        if ch.kind == CH_BOOK and self.rejected_publications != refused_before:
            pass   # a refused book publication already asked for a fresh resubscribe
        elif recovered and offset >= 0 and ch.offset < offset:
            # Recovery claimed success but did not reach the top: cannot trust it.
            self.venue.on_gap(ch, f"{ch.name}: recovery stopped at {ch.offset} < {offset}", True)
        else:
            self.venue.on_subscribed(ch, recovered, (not recovered) and before >= 0 and offset > before)
        if first_error is not None:
            self.rejected_messages -= 1   # counted once, by on_frame_c, as this message
            raise first_error
        return 0

    cdef int decode_account(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1:
        cdef JsonStatus st
        cdef JsonSpan span
        cdef Py_ssize_t obj_pos = c.pos
        st = js_find_key(c, obj_pos, b"type", 4)
        if st == JS_OK:
            st = js_read_string(c, &span)
        if st != JS_OK:
            if st < JS_ERROR:
                raise DecodeError(f"cadenza {ch.name}: account data without type", obj_pos)
            js_raise(c, st, f"cadenza {ch.name} account")
        if js_span_is(c, &span, b"order", 5):
            st = js_find_key(c, obj_pos, b"order", 5)
            if st == JS_OK:
                return self.decode_order(c, ch, recv_ns)
        elif js_span_is(c, &span, b"fill", 4):
            st = js_find_key(c, obj_pos, b"fill", 4)
            if st == JS_OK:
                return self.decode_fill(c, ch, recv_ns)
        elif js_span_is(c, &span, b"portfolio", 9):
            st = js_find_key(c, obj_pos, b"positions", 9)
            if st == JS_OK:
                return self.decode_list(c, ch, recv_ns, False, obj_pos)
        elif js_span_is(c, &span, b"balances", 8):
            st = js_find_key(c, obj_pos, b"balances", 8)
            if st == JS_OK:
                return self.decode_list(c, ch, recv_ns, True, obj_pos)
        else:
            self.venue.on_unknown_account(js_span_to_str(c, &span))
            return 0
        if st < JS_ERROR:
            raise DecodeError(f"cadenza {ch.name}: {js_span_to_str(c, &span)} data incomplete", obj_pos)
        js_raise(c, st, f"cadenza {ch.name} account")

    cdef Instrument instrument_of(self, JsonCursor* c, const JsonSpan* span):
        return self.instruments.get(js_span_to_str(c, span))

    cdef str opt_str(self, JsonCursor* c, const JsonSpan* spans, unsigned int seen, int i):
        return js_span_to_str(c, &spans[i]) if seen & (1u << i) else None

    cdef Instrument read_account_object(self, JsonCursor* c, Channel ch, const FieldSpec* specs, int n_specs,
                                        JsonSpan* sp, int64_t* iv, unsigned int* seen, unsigned int required,
                                        int inst_field, str what, str needs):
        """One flat order or fill object (read_flat into sp/iv/seen), its `required`
        fields checked: its Instrument, or None for an instrument this feed does not
        track (reported to venue.on_unknown_instrument). DecodeError naming `what` (and
        listing `needs` for a missing field) otherwise."""
        cdef JsonStatus st = read_flat(c, specs, n_specs, sp, iv, seen)
        if st != JS_OK:
            js_raise(c, st, f"cadenza {ch.name} {what}")
        if seen[0] & required != required:
            raise DecodeError(f"cadenza {ch.name}: {what} needs {needs}")
        inst = self.instrument_of(c, &sp[inst_field])
        if inst is None:
            self.venue.on_unknown_instrument(js_span_to_str(c, &sp[inst_field]))
        return inst

    cdef int decode_order(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1:
        cdef JsonSpan sp[O_COUNT]
        cdef int64_t iv[O_COUNT]
        cdef unsigned int seen = 0
        cdef int64_t price_ticks = 0, stop_ticks = 0, qty_lots = 0, filled_lots = 0
        cdef Instrument inst = self.read_account_object(
            c, ch, ORDER_FIELDS, O_COUNT, sp, iv, &seen, ORDER_REQUIRED, O_INSTRUMENT,
            "order", "id, instrumentId, side, status, qty, filledQty")
        if inst is None:
            return 0
        if seen & (1u << O_PRICE):
            check_field(c, js_span_steps(c, &sp[O_PRICE], inst.price_decimals, inst.tick_units, &price_ticks),
                        "cadenza", "order", "price")
        if seen & (1u << O_STOP_PRICE):
            check_field(c, js_span_steps(c, &sp[O_STOP_PRICE], inst.price_decimals, inst.tick_units, &stop_ticks),
                        "cadenza", "order", "stopPrice")
        check_field(c, js_span_steps(c, &sp[O_QTY], inst.qty_decimals, inst.lot_units, &qty_lots),
                    "cadenza", "order", "qty")
        check_field(c, js_span_steps(c, &sp[O_FILLED], inst.qty_decimals, inst.lot_units, &filled_lots),
                    "cadenza", "order", "filledQty")
        self.venue.on_order(js_span_to_str(c, &sp[O_ID]), self.opt_str(c, sp, seen, O_CLIENT_ID), inst,
                            js_span_to_str(c, &sp[O_SIDE]), self.opt_str(c, sp, seen, O_TYPE),
                            js_span_to_str(c, &sp[O_STATUS]), price_ticks, stop_ticks, qty_lots, filled_lots,
                            self.opt_str(c, sp, seen, O_COST),
                            iv[O_CREATED] if seen & (1u << O_CREATED) else 0,
                            iv[O_UPDATED] if seen & (1u << O_UPDATED) else 0,
                            iv[O_SEQ] if seen & (1u << O_SEQ) else 0, recv_ns)
        return 0

    cdef int decode_fill(self, JsonCursor* c, Channel ch, int64_t recv_ns) except -1:
        cdef JsonSpan sp[F_COUNT]
        cdef int64_t iv[F_COUNT]
        cdef unsigned int seen = 0
        cdef int64_t price_ticks = 0, qty_lots = 0
        cdef Instrument inst = self.read_account_object(
            c, ch, FILL_FIELDS, F_COUNT, sp, iv, &seen, FILL_REQUIRED, F_INSTRUMENT,
            "fill", "orderId, tradeId, instrumentId, side, price, qty")
        if inst is None:
            return 0
        check_field(c, js_span_steps(c, &sp[F_PRICE], inst.price_decimals, inst.tick_units, &price_ticks),
                    "cadenza", "fill", "price")
        check_field(c, js_span_steps(c, &sp[F_QTY], inst.qty_decimals, inst.lot_units, &qty_lots),
                    "cadenza", "fill", "qty")
        self.venue.on_fill(js_span_to_str(c, &sp[F_ORDER_ID]), js_span_to_str(c, &sp[F_TRADE_ID]), inst,
                           js_span_to_str(c, &sp[F_SIDE]), price_ticks, qty_lots,
                           self.opt_str(c, sp, seen, F_FEE), self.opt_str(c, sp, seen, F_FEE_ASSET),
                           iv[F_TS] if seen & (1u << F_TS) else 0,
                           iv[F_SEQ] if seen & (1u << F_SEQ) else 0, recv_ns)
        return 0

    cdef int decode_list(self, JsonCursor* c, Channel ch, int64_t recv_ns, bint balances,
                         Py_ssize_t obj_pos) except -1:
        """``positions`` (portfolio) or ``balances``: an array of flat objects. Every
        element is decoded and validated before the venue sees any of them."""
        cdef JsonSpan sp[P_COUNT]
        cdef int64_t iv[P_COUNT]
        cdef unsigned int seen
        cdef Py_ssize_t nel = 0
        cdef int64_t top_seq = 0, qty_lots = 0
        cdef list rows = []
        cdef Instrument inst
        cdef JsonStatus st = js_enter_array(c)
        while st == JS_OK:
            st = js_next_element(c, &nel)
            if st != JS_OK:
                break
            if balances:
                st = read_flat(c, BALANCE_FIELDS, B_COUNT, sp, iv, &seen)
                if st != JS_OK:
                    break
                if not seen & (1u << B_ASSET):
                    raise DecodeError(f"cadenza {ch.name}: balance without asset")
                fields = {"asset": js_span_to_str(c, &sp[B_ASSET])}
                for i, name in ((B_TOTAL, "total"), (B_AVAILABLE, "available"), (B_RESERVED, "reserved")):
                    if seen & (1u << <int>i):
                        fields[name] = js_span_to_str(c, &sp[<int>i])
                rows.append((fields, iv[B_SEQ] if seen & (1u << B_SEQ) else 0))
                continue
            st = read_flat(c, POSITION_FIELDS, P_COUNT, sp, iv, &seen)
            if st != JS_OK:
                break
            if seen & POSITION_REQUIRED != POSITION_REQUIRED:
                raise DecodeError(f"cadenza {ch.name}: position needs instrumentId and qty")
            inst = self.instrument_of(c, &sp[P_INSTRUMENT])
            if inst is None:
                self.venue.on_unknown_instrument(js_span_to_str(c, &sp[P_INSTRUMENT]))
                continue
            check_field(c, js_span_steps(c, &sp[P_QTY], inst.qty_decimals, inst.lot_units, &qty_lots),
                        "cadenza", "position", "qty")
            fields = {}
            if seen & (1u << P_AVG_ENTRY):
                fields["avgEntryPrice"] = js_span_to_str(c, &sp[P_AVG_ENTRY])
            if seen & (1u << P_REALIZED):
                fields["realizedPnl"] = js_span_to_str(c, &sp[P_REALIZED])
            rows.append((inst, qty_lots, fields, iv[P_SEQ] if seen & (1u << P_SEQ) else 0))
        if st != JS_END:
            js_raise(c, st, f"cadenza {ch.name} list")
        if balances:
            st = js_find_key(c, obj_pos, b"seq", 3)
            if st == JS_OK:
                st = js_read_int64(c, False, &top_seq)
        # The list is one Account batch: every item applies or none does, and the
        # Account's own notifications come after the whole list.
        # Position and balance callbacks wait for the commit (venue.begin_list/end_list).
        acct = getattr(self.venue, "account", None)
        batch = acct is not None and len(rows) > 1
        cdef bint applied = False
        self.venue.begin_list()
        try:
            if batch:
                acct.begin_batch()
            try:
                if balances:
                    for fields, seq in rows:
                        self.venue.on_balance(fields, seq or top_seq, recv_ns)
                else:
                    for inst, qty_lots, fields, seq in rows:
                        self.venue.on_position(inst, qty_lots, fields, seq, recv_ns)
            except BaseException:
                if batch:
                    acct.abort_batch()
                raise
            applied = not batch or acct.commit_batch()
            if not applied:
                self.rejected_publications += 1   # the Account counted and reported the refusal
        finally:
            self.venue.end_list(applied, recv_ns)
        return 0
