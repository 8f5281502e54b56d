"""Bot platform frame decoder: frames straight from picows' buffer into the Account.
The wire schemas are documented in ``feeds.botplatform``.

One frame holds one JSON envelope. The envelope and the hot User messages
(PositionCreate, PositionUpdate, PositionOrderCreate, PositionOrderUpdate,
NftEnergyUpdate and the per-connection Snapshot) are decoded with jscan, field by field,
into BotRecord structs; decimal strings become ticks, lots and quote units with the
instrument's exact decimals (``decimals.dec_to_steps``). Nothing is applied until the
whole frame validated, so a bad frame raises DecodeError and changes nothing. Cold
messages (Auth, Symbol, Notification) go to the venue as the raw bytes of ``data``.
"""
from cpython.mem cimport PyMem_Malloc, PyMem_Free, PyMem_RawFree
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport strlen

from engine._core.types cimport ST_NEGATIVE, ST_SYNTAX
from engine._core.instrument cimport Instrument
from engine._core.jscan cimport (
    js_init,
    JsonCursor, JsonSpan, JsonStatus,
    JS_OK, JS_END, JS_NOT_FOUND, JS_ERROR, JS_DECIMAL, JS_BAD_FIELD, JS_MISSING_FIELD,
    JS_WRONG_TYPE, JS_DUPLICATE, JS_TOO_LONG,
    js_fail, js_enter_object, js_enter_array, js_next_member, js_next_element,
    js_skip_value, js_expect_end, js_read_string, js_read_int64, js_read_null, js_find_key,
    js_span_is, js_span_to_str, js_raise, js_match_word, js_claim, js_span_steps,
)
from feeds._decode_common cimport fill_lens, scratch_reserve

from engine._core.account cimport Account
from feeds._hotpath cimport FrameSink, Dispatch

from engine.errors import DecodeError


cdef inline bint key_is(const JsonCursor* c, const JsonSpan* key, const char* lit) noexcept nogil:
    # strlen of a literal is folded by the C compiler.
    return js_span_is(c, key, lit, <Py_ssize_t>strlen(lit))


# ---- the venue's words, as C strings (matched in place) and as Python str (passed on) --

cdef enum:
    N_EVENTS = 4
    N_USER_TYPES = 6
    N_POSITION_STATUS = 5
    N_ORDER_STATUS = 5
    N_ORDER_TYPES = 7

cdef const char* EVENT_WORDS[N_EVENTS]
EVENT_WORDS[:] = [b"User", b"Symbol", b"Auth", b"Heartbeat"]
cdef Py_ssize_t EVENT_LENS[N_EVENTS]
fill_lens(EVENT_WORDS, EVENT_LENS, N_EVENTS)
cdef int EVENT_CODES[N_EVENTS]
EVENT_CODES[:] = [EV_USER, EV_SYMBOL, EV_AUTH, EV_HEARTBEAT]

cdef const char* USER_TYPE_WORDS[N_USER_TYPES]
USER_TYPE_WORDS[:] = [b"PositionUpdate", b"PositionOrderUpdate", b"PositionCreate",
                      b"PositionOrderCreate", b"NftEnergyUpdate", b"Snapshot"]
cdef Py_ssize_t USER_TYPE_LENS[N_USER_TYPES]
fill_lens(USER_TYPE_WORDS, USER_TYPE_LENS, N_USER_TYPES)
cdef int USER_TYPE_CODES[N_USER_TYPES]
USER_TYPE_CODES[:] = [BK_POSITION_UPDATE, BK_ORDER_UPDATE, BK_POSITION_CREATE, BK_ORDER_CREATE,
                      BK_ENERGY, BK_SNAPSHOT]

# Index = engine.PositionStatus value.
cdef const char* POSITION_STATUS_WORDS[N_POSITION_STATUS]
POSITION_STATUS_WORDS[:] = [b"Created", b"InProgress", b"Finishing", b"Completed", b"Failed"]
cdef Py_ssize_t POSITION_STATUS_LENS[N_POSITION_STATUS]
fill_lens(POSITION_STATUS_WORDS, POSITION_STATUS_LENS, N_POSITION_STATUS)
POSITION_STATUS_NAMES = ("Created", "InProgress", "Finishing", "Completed", "Failed")

cdef const char* ORDER_STATUS_WORDS[N_ORDER_STATUS]
ORDER_STATUS_WORDS[:] = [b"New", b"PartiallyFilled", b"Filled", b"Canceled", b"Expired"]
cdef Py_ssize_t ORDER_STATUS_LENS[N_ORDER_STATUS]
fill_lens(ORDER_STATUS_WORDS, ORDER_STATUS_LENS, N_ORDER_STATUS)
ORDER_STATUS_NAMES = ("New", "PartiallyFilled", "Filled", "Canceled", "Expired")

# Index = engine.OrderType value.
cdef const char* ORDER_TYPE_WORDS[N_ORDER_TYPES]
ORDER_TYPE_WORDS[:] = [b"Limit", b"Market", b"Stop", b"StopMarket", b"TakeProfit",
                       b"TakeProfitMarket", b"TrailingStopMarket"]
cdef Py_ssize_t ORDER_TYPE_LENS[N_ORDER_TYPES]
fill_lens(ORDER_TYPE_WORDS, ORDER_TYPE_LENS, N_ORDER_TYPES)
ORDER_TYPE_NAMES = ("Limit", "Market", "Stop", "StopMarket", "TakeProfit", "TakeProfitMarket",
                    "TrailingStopMarket")

cdef const char* ORDER_SIDE_WORDS[2]
ORDER_SIDE_WORDS[:] = [b"Buy", b"Sell"]
cdef Py_ssize_t ORDER_SIDE_LENS[2]
fill_lens(ORDER_SIDE_WORDS, ORDER_SIDE_LENS, 2)
ORDER_SIDE_NAMES = ("Buy", "Sell")
cdef const char* POSITION_SIDE_WORDS[2]
POSITION_SIDE_WORDS[:] = [b"Long", b"Short"]
cdef Py_ssize_t POSITION_SIDE_LENS[2]
fill_lens(POSITION_SIDE_WORDS, POSITION_SIDE_LENS, 2)
POSITION_SIDE_NAMES = ("Long", "Short")

#: Fields of position and order objects (BotRecord.bad_field bits).
cdef enum:
    F_ID = 1
    F_POSITION_ID = 2
    F_CLIENT_ID = 4
    F_SYMBOL = 8
    F_SIDE = 16
    F_STATUS = 32
    F_TYPE = 64
    F_QTY = 128
    F_FILLED = 256
    F_PRICE = 512
    F_STOP = 1024
    F_ENTRY = 2048
    F_REALIZED = 4096
    F_TS = 8192
    F_ENERGY = 16384
    F_NULLABLE = F_CLIENT_ID | F_PRICE | F_STOP | F_ENTRY | F_REALIZED
    F_POSITION_REQUIRED = F_ID | F_SYMBOL | F_SIDE | F_STATUS | F_QTY | F_TS
    F_ORDER_REQUIRED = (F_ID | F_POSITION_ID | F_SYMBOL | F_SIDE | F_STATUS | F_TYPE | F_QTY
                        | F_FILLED | F_TS)

_FIELD_NAMES = {F_ID: "id", F_POSITION_ID: "position_id", F_CLIENT_ID: "client_id",
                F_SYMBOL: "symbol", F_SIDE: "side", F_STATUS: "status", F_TYPE: "order_type",
                F_QTY: "qty", F_FILLED: "filled_qty", F_PRICE: "price", F_STOP: "stop_price",
                F_ENTRY: "entry_price", F_REALIZED: "realized_pnl", F_TS: "ts", F_ENERGY: "energy"}
_KIND_NAMES = {BK_NONE: "User data", BK_POSITION_CREATE: "PositionCreate",
               BK_POSITION_UPDATE: "PositionUpdate", BK_ORDER_CREATE: "PositionOrderCreate",
               BK_ORDER_UPDATE: "PositionOrderUpdate", BK_ENERGY: "NftEnergyUpdate",
               BK_SNAPSHOT: "Snapshot", BK_COLD: "User message"}

#: Event and user-type codes for Python (tests, benchmarks).
KIND_POSITION_CREATE = BK_POSITION_CREATE
KIND_POSITION_UPDATE = BK_POSITION_UPDATE
KIND_ORDER_CREATE = BK_ORDER_CREATE
KIND_ORDER_UPDATE = BK_ORDER_UPDATE


cdef const char* ORDER_FIELD_WORDS[12]
ORDER_FIELD_WORDS[:] = [b"id", b"status", b"qty", b"filled_qty", b"price", b"stop_price", b"ts", b"symbol",
                        b"side", b"order_type", b"position_id", b"client_id"]
cdef Py_ssize_t ORDER_FIELD_LENS[12]
fill_lens(ORDER_FIELD_WORDS, ORDER_FIELD_LENS, 12)
cdef int ORDER_FIELD_BITS[12]
ORDER_FIELD_BITS[:] = [F_ID, F_STATUS, F_QTY, F_FILLED, F_PRICE, F_STOP, F_TS, F_SYMBOL, F_SIDE, F_TYPE,
                       F_POSITION_ID, F_CLIENT_ID]
cdef const char* POSITION_FIELD_WORDS[8]
POSITION_FIELD_WORDS[:] = [b"id", b"status", b"qty", b"entry_price", b"realized_pnl", b"ts", b"symbol", b"side"]
cdef Py_ssize_t POSITION_FIELD_LENS[8]
fill_lens(POSITION_FIELD_WORDS, POSITION_FIELD_LENS, 8)
cdef int POSITION_FIELD_BITS[8]
POSITION_FIELD_BITS[:] = [F_ID, F_STATUS, F_QTY, F_ENTRY, F_REALIZED, F_TS, F_SYMBOL, F_SIDE]


cdef inline int field_bit(const JsonCursor* c, const JsonSpan* key, bint is_order) noexcept nogil:
    # Which known field `key` names (0: a field this client skips, including the other
    # object kind's fields: a position has no filled_qty, an order no entry_price).
    cdef int idx
    if is_order:
        idx = js_match_word(c, key, ORDER_FIELD_WORDS, ORDER_FIELD_LENS, 12)
        return ORDER_FIELD_BITS[idx] if idx >= 0 else 0
    idx = js_match_word(c, key, POSITION_FIELD_WORDS, POSITION_FIELD_LENS, 8)
    return POSITION_FIELD_BITS[idx] if idx >= 0 else 0


cdef bint plain_decimal(const char* s, Py_ssize_t n) noexcept nogil:
    # digits ["." digits]: a non-negative decimal with no sign or exponent.
    cdef Py_ssize_t i = 0, int_digits = 0, frac_digits = 0
    while i < n and b'0' <= s[i] <= b'9':
        i += 1
        int_digits += 1
    if i < n and s[i] == b'.':
        i += 1
        while i < n and b'0' <= s[i] <= b'9':
            i += 1
            frac_digits += 1
        if frac_digits == 0:
            return False
    return i == n and int_digits > 0


cdef JsonStatus span_steps(JsonCursor* c, const JsonSpan* span, int32_t decimals, int64_t units,
                           bint allow_negative, int64_t* out) noexcept nogil:
    # A decimal string span -> whole steps; JS_DECIMAL with c.dec_status on failure.
    # Escaped text is the wrong type here (js_read_steps' rule), not a bad decimal.
    cdef JsonStatus st
    if span.has_escapes:
        return js_fail(c, JS_WRONG_TYPE, span.start)
    st = js_span_steps(c, span, decimals, units, out)
    if st == JS_OK and not allow_negative and out[0] < 0:
        c.dec_status = ST_NEGATIVE
        return js_fail(c, JS_DECIMAL, span.start)
    return st


cdef JsonStatus read_energy_or_ts(JsonCursor* c, const JsonSpan* key, BotRecord* rec,
                                  bint energy_nullable) noexcept nogil:
    # The member `key` of an NftEnergyUpdate or Snapshot: "energy" (int >= 0, units of
    # 1e-8; null allowed in a Snapshot), "ts" (int ns), anything else skipped.
    cdef bint is_null = False
    cdef Py_ssize_t value_pos
    cdef JsonStatus st
    if key_is(c, key, b"ts"):
        rec.bad_field = F_TS
        return js_read_int64(c, False, &rec.ts_ns)
    if not key_is(c, key, b"energy"):
        return js_skip_value(c)
    rec.bad_field = F_ENERGY
    if energy_nullable:
        st = js_read_null(c, &is_null)
        if st != JS_OK or is_null:
            return st
    value_pos = c.pos
    st = js_read_int64(c, False, &rec.energy)
    if st == JS_OK and rec.energy < 0:
        c.dec_status = ST_NEGATIVE
        return js_fail(c, JS_DECIMAL, value_pos)
    return st


cdef class BotPlatformDecoder:
    """Decodes bot platform frames for one venue (state survives reconnects).

    ``BotPlatformDecoder(venue, account, dispatch, instruments)``: ``account`` is the
    engine Account (feed mode) the User messages update, ``instruments`` the Instruments
    whose positions and orders are tracked (objects for other symbols are counted in
    ``unknown_symbol`` and skipped).

    ``on_frame_c`` (C, called by the session's listener with picows' buffer) is the hot
    path, ``feed(frame, recv_ns)`` its Python entry: O(frame length) scanning plus
    O(instruments) to match a symbol, then one Account call per object. Sequence rules
    (``last_seq``, ``synced``) are in ``feeds.botplatform``. Raises DecodeError for a
    malformed frame (nothing applied)."""

    def __cinit__(self):
        self.specs = NULL
        self.snap_positions = NULL
        self.snap_orders = NULL

    def __init__(self, venue, Account account not None, Dispatch dispatch not None, instruments):
        cdef Instrument inst
        cdef Py_ssize_t i
        cdef int64_t step
        self.venue = venue
        self.account = account
        self.dispatch = dispatch
        self.instruments = list(instruments)
        self.instrument_names = [inst.symbol.encode() for inst in self.instruments]
        self.n_specs = 0
        PyMem_Free(self.specs)  # __init__ called again: the new table replaces the old
        self.specs = <InstSpec*>PyMem_Malloc(max(len(self.instruments), 1) * sizeof(InstSpec))
        if self.specs == NULL:
            raise MemoryError()
        for i in range(len(self.instruments)):
            inst = self.instruments[i]
            if <object>inst.tick_units * <object>inst.lot_units >= (1 << 63):  # Python ints: no overflow
                raise ValueError(f"{inst.symbol}: tick_units * lot_units overflows int64")
            step = inst.tick_units * inst.lot_units
            # Lifetime: name points into self.instrument_names[i], kept as long as self.
            self.specs[i].name = <const char*>(<bytes>self.instrument_names[i])
            self.specs[i].name_len = len(<bytes>self.instrument_names[i])
            self.specs[i].price_decimals = inst.price_decimals
            self.specs[i].tick_units = inst.tick_units
            self.specs[i].qty_decimals = inst.qty_decimals
            self.specs[i].lot_units = inst.lot_units
            self.specs[i].quote_decimals = inst.price_decimals + inst.qty_decimals
            self.specs[i].quote_step_units = step
            self.n_specs = i + 1
        self.current_position = {}
        self.known_positions = set()
        self.user_id = ""
        self.last_seq = -1
        self.synced = False

    def __dealloc__(self):
        PyMem_Free(self.specs)
        PyMem_RawFree(self.snap_positions)
        PyMem_RawFree(self.snap_orders)

    @property
    def user_id(self):
        """The authenticated user id (from AuthOk); "" before authentication."""
        return self._user_id

    @user_id.setter
    def user_id(self, str value not None):
        self._user_id = value
        self._user_id_utf8 = value.encode()
        # Lifetime: the pointer is into the bytes just stored on self.
        self._user_id_ptr = <const char*>self._user_id_utf8
        self._user_id_len = len(self._user_id_utf8)

    def current_positions(self):
        """{symbol: id of the bot position the account's netting position follows}."""
        return dict(self.current_position)

    def reset_connection(self):
        """A new connection: User messages wait for its Snapshot (``synced`` False).
        ``last_seq`` and the position bookkeeping are kept."""
        self.synced = False

    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        """Decode and apply one WebSocket message buf[0:n] (BORROWED from picows' read
        buffer: valid for this call only). DecodeError for a malformed message: nothing
        of it is applied. ``feed(frame, recv_ns)`` is the Python entry."""
        cdef JsonCursor c
        # Re-entry (a callback feeding this decoder) is refused by FrameSink.deliver.
        js_init(&c, buf, n)
        return self.decode_frame(&c, recv_ns)

    # ---- envelope ----------------------------------------------------------------------
    cdef int decode_frame(self, JsonCursor* c, int64_t recv_ns) except -1:
        cdef JsonSpan key, ev_span, uid_span
        cdef Py_ssize_t count = 0, data_pos = -1, data_end = -1, n_pos = 0, n_ord = 0, i
        cdef int ev = EV_NONE, idx
        cdef bint has_uid = False, has_seq = False, data_done = False
        cdef int64_t seq = 0
        cdef BotRecord rec
        cdef JsonStatus dst = JS_OK
        cdef object cold = None
        cdef JsonStatus st = js_enter_object(c)
        rec.kind = BK_NONE
        rec.bad_field = 0
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            if key_is(c, &key, b"data"):
                if data_pos >= 0:
                    st = js_fail(c, JS_DUPLICATE, key.start)
                    break
                data_pos = c.pos
                if ev == EV_USER:
                    # The usual order (event first): decode in place, one pass.
                    dst = self.decode_user_data(c, &rec, &n_pos, &n_ord)
                    if dst != JS_OK:
                        self.raise_record(c, dst, &rec)
                    data_done = True
                else:
                    st = js_skip_value(c)
                data_end = c.pos
            elif key_is(c, &key, b"event"):
                st = js_read_string(c, &ev_span)
                if st == JS_OK:
                    idx = js_match_word(c, &ev_span, EVENT_WORDS, EVENT_LENS, N_EVENTS)
                    ev = EVENT_CODES[idx] if idx >= 0 else EV_OTHER
            elif key_is(c, &key, b"seq"):
                st = js_read_int64(c, False, &seq)
                has_seq = True
            elif key_is(c, &key, b"user_id"):
                st = js_read_string(c, &uid_span)
                has_uid = True
            else:
                st = js_skip_value(c)
        if st == JS_END:
            st = js_expect_end(c)
        if st != JS_OK:
            js_raise(c, st, "botplatform frame")
        if ev == EV_HEARTBEAT:
            self.heartbeats += 1
            return 0
        if ev == EV_NONE:
            raise DecodeError("botplatform frame without \"event\"", 0)
        if ev == EV_OTHER:
            self.unknown_messages += 1
            self.venue.on_unknown(js_span_to_str(c, &ev_span), None)
            return 0
        if data_pos < 0:
            raise DecodeError(f"botplatform {js_span_to_str(c, &ev_span)} frame without \"data\"", 0)
        if ev == EV_AUTH:
            self.venue.on_auth(c.buf[data_pos:data_end])
            return 0
        if ev == EV_SYMBOL:
            self.venue.on_symbols(c.buf[data_pos:data_end], recv_ns)
            return 0
        # ---- User
        if not data_done:
            c.pos = data_pos
            dst = self.decode_user_data(c, &rec, &n_pos, &n_ord)
            if dst != JS_OK:
                self.raise_record(c, dst, &rec)
        if not has_seq or not has_uid:
            raise DecodeError("botplatform User frame needs \"user_id\" and \"seq\"", 0)
        if seq < 0:
            raise DecodeError(f"botplatform User frame: negative seq {seq}", 0)
        if self._user_id_len == 0 or not js_span_is(c, &uid_span, self._user_id_ptr, self._user_id_len):
            raise DecodeError(f"botplatform User frame for user {js_span_to_str(c, &uid_span)!r}, "
                              f"authenticated as {self._user_id!r}", uid_span.start)
        if rec.kind == BK_COLD:
            # Parsed (and validated) before any state changes; delivered after the seq.
            cold = self.venue.parse_user_message(js_span_to_str(c, &rec.type_name),
                                                 c.buf[rec.raw.start:rec.raw.start + rec.raw.len], seq, recv_ns)
        # The frame is valid: from here on state changes (sequence first, then the account).
        if rec.kind == BK_SNAPSHOT:
            if self.apply_snapshot(c, &rec, n_pos, n_ord, seq, recv_ns):
                self.last_seq = seq
                self.synced = True
                self.applied += 1
                self.venue.on_synced(seq)
            else:
                # The Account refused part of it: nothing of it stays (whole or nothing),
                # and User messages wait for the next connection's Snapshot.
                self.synced = False
                self.rejected += 1
                self.venue.on_refused("Snapshot", f"seq {seq}")
            return 0
        if not self.synced:
            self.unsynced_dropped += 1
            return 0
        if seq <= self.last_seq:
            self.stale_messages += 1
            return 0
        if seq != self.last_seq + 1:
            self.synced = False  # nothing more applies until the resync's Snapshot
            self.venue.on_gap(self.last_seq + 1, seq)
            return 0
        self.last_seq = seq
        self.applied += 1
        if rec.kind == BK_POSITION_CREATE or rec.kind == BK_POSITION_UPDATE:
            self.apply_position(c, &rec, False, seq, recv_ns, None)
        elif rec.kind == BK_ORDER_CREATE or rec.kind == BK_ORDER_UPDATE:
            self.apply_order(c, &rec, seq, recv_ns, None)
        elif rec.kind == BK_ENERGY:
            self.apply_energy(rec.energy, rec.ts_ns, recv_ns)
        elif cold is not None:
            self.venue.on_notification_applied(cold)
        return 0

    # ---- User data (nogil: no Python object is touched) --------------------------------
    cdef JsonStatus decode_user_data(self, JsonCursor* c, BotRecord* rec, Py_ssize_t* n_pos,
                                     Py_ssize_t* n_ord) noexcept nogil:
        cdef Py_ssize_t obj_pos = c.pos, count = 0
        cdef JsonSpan key
        cdef int idx
        cdef unsigned int seen = 0
        cdef JsonStatus st = js_find_key(c, obj_pos, b"type", 4)
        rec.energy = -1
        rec.ts_ns = 0
        rec.raw.start = obj_pos
        rec.raw.has_escapes = False
        if st == JS_NOT_FOUND:
            return js_fail(c, JS_MISSING_FIELD, obj_pos)
        if st == JS_OK:
            st = js_read_string(c, &rec.type_name)
        if st != JS_OK:
            return st
        idx = js_match_word(c, &rec.type_name, USER_TYPE_WORDS, USER_TYPE_LENS, N_USER_TYPES)
        rec.kind = USER_TYPE_CODES[idx] if idx >= 0 else BK_COLD
        c.pos = obj_pos
        if rec.kind == BK_POSITION_CREATE or rec.kind == BK_POSITION_UPDATE:
            st = self.decode_object(c, False, rec)
        elif rec.kind == BK_ORDER_CREATE or rec.kind == BK_ORDER_UPDATE:
            st = self.decode_object(c, True, rec)
        elif rec.kind == BK_SNAPSHOT:
            st = self.decode_snapshot(c, rec, n_pos, n_ord)
        elif rec.kind == BK_ENERGY:
            st = js_enter_object(c)
            while st == JS_OK:
                st = js_next_member(c, &count, &key)
                if st != JS_OK:
                    break
                if key_is(c, &key, b"energy"):
                    st = js_claim(c, &key, &seen, F_ENERGY)
                    if st != JS_OK:
                        return st
                st = read_energy_or_ts(c, &key, rec, False)
            if st == JS_END:
                st = JS_OK
                if not seen & F_ENERGY:
                    rec.bad_field = F_ENERGY
                    st = js_fail(c, JS_MISSING_FIELD, obj_pos)
        else:
            st = js_skip_value(c)  # cold: validated here, handed over raw
        rec.raw.len = c.pos - obj_pos
        return st

    cdef JsonStatus decode_snapshot(self, JsonCursor* c, BotRecord* rec, Py_ssize_t* n_pos,
                                    Py_ssize_t* n_ord) noexcept nogil:
        cdef JsonSpan key
        cdef Py_ssize_t count = 0, nel
        cdef bint is_order
        cdef BotRecord* item
        cdef JsonStatus st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            if key_is(c, &key, b"positions") or key_is(c, &key, b"orders"):
                is_order = key_is(c, &key, b"orders")
                nel = 0
                st = js_enter_array(c)
                while st == JS_OK:
                    st = js_next_element(c, &nel)
                    if st != JS_OK:
                        break
                    if self.grow(is_order, nel) < 0:
                        self.oom = True
                        return js_fail(c, JS_TOO_LONG, c.pos)
                    item = &self.snap_orders[nel - 1] if is_order else &self.snap_positions[nel - 1]
                    item.kind = BK_ORDER_CREATE if is_order else BK_POSITION_CREATE
                    st = self.decode_object(c, is_order, item)
                    if st != JS_OK:
                        rec.bad_field = item.bad_field
                        rec.kind = item.kind
                        return st
                if st != JS_END:
                    return st
                st = JS_OK
                if is_order:
                    n_ord[0] = nel
                else:
                    n_pos[0] = nel
            else:
                st = read_energy_or_ts(c, &key, rec, True)
        return JS_OK if st == JS_END else st

    cdef int grow(self, bint orders, Py_ssize_t n) noexcept nogil:
        # Room for n records in the snapshot scratch of `orders`; -1 when out of memory.
        cdef BotRecord** buf = &self.snap_orders if orders else &self.snap_positions
        cdef Py_ssize_t* cap = &self.snap_orders_cap if orders else &self.snap_positions_cap
        if n <= cap[0]:
            return 0
        return scratch_reserve(<void**>buf, cap, max(16, 2 * cap[0], n), sizeof(BotRecord))

    cdef JsonStatus decode_object(self, JsonCursor* c, bint is_order, BotRecord* r) noexcept nogil:
        cdef JsonSpan key, span, s_qty, s_filled, s_price, s_stop, s_realized
        cdef Py_ssize_t count = 0, obj_pos = c.pos
        cdef int bit, idx
        cdef unsigned int seen = 0, required
        cdef bint is_null
        cdef JsonStatus st
        r.inst_idx = -1
        r.flags = 0
        r.bad_field = 0
        r.qty_lots = r.filled_lots = r.price_ticks = r.stop_ticks = r.realized_units = r.ts_ns = 0
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &count, &key)
            if st != JS_OK:
                break
            bit = field_bit(c, &key, is_order)
            if bit == 0:
                st = js_skip_value(c)
                continue
            r.bad_field = bit
            st = js_claim(c, &key, &seen, bit)
            if st != JS_OK:
                return st
            if bit == F_TS:
                st = js_read_int64(c, False, &r.ts_ns)
                continue
            if bit & F_NULLABLE:
                st = js_read_null(c, &is_null)
                if st != JS_OK or is_null:
                    continue
            st = js_read_string(c, &span)
            if st != JS_OK:
                break
            if bit == F_ID:
                r.id = span
            elif bit == F_SYMBOL:
                r.symbol = span
            elif bit == F_POSITION_ID:
                r.position_id = span
            elif bit == F_CLIENT_ID:
                r.client_id = span
                r.flags |= BF_CLIENT_ID
            elif bit == F_SIDE:
                if is_order:
                    r.side = js_match_word(c, &span, ORDER_SIDE_WORDS, ORDER_SIDE_LENS, 2)
                else:
                    r.side = js_match_word(c, &span, POSITION_SIDE_WORDS, POSITION_SIDE_LENS, 2)
                if r.side < 0:
                    return js_fail(c, JS_BAD_FIELD, span.start)
            elif bit == F_STATUS:
                if is_order:
                    r.status = js_match_word(c, &span, ORDER_STATUS_WORDS, ORDER_STATUS_LENS, N_ORDER_STATUS)
                else:
                    r.status = js_match_word(c, &span, POSITION_STATUS_WORDS, POSITION_STATUS_LENS, N_POSITION_STATUS)
                if r.status < 0:
                    return js_fail(c, JS_BAD_FIELD, span.start)
            elif bit == F_TYPE:
                r.order_type = js_match_word(c, &span, ORDER_TYPE_WORDS, ORDER_TYPE_LENS, N_ORDER_TYPES)
                if r.order_type < 0:
                    return js_fail(c, JS_BAD_FIELD, span.start)
            elif bit == F_QTY:
                s_qty = span
            elif bit == F_FILLED:
                s_filled = span
            elif bit == F_PRICE:
                s_price = span
                r.flags |= BF_PRICE
            elif bit == F_STOP:
                s_stop = span
                r.flags |= BF_STOP
            elif bit == F_ENTRY:
                if span.has_escapes or not plain_decimal(c.buf + span.start, span.len):
                    c.dec_status = ST_SYNTAX
                    return js_fail(c, JS_DECIMAL, span.start)
                r.entry_price = span
                r.flags |= BF_ENTRY
            elif bit == F_REALIZED:
                s_realized = span
                r.flags |= BF_REALIZED
        if st != JS_END:
            return st
        required = F_ORDER_REQUIRED if is_order else F_POSITION_REQUIRED
        if seen & required != required:
            bit = 1
            while bit & (~seen & required) == 0:
                bit <<= 1
            r.bad_field = bit
            return js_fail(c, JS_MISSING_FIELD, obj_pos)
        r.inst_idx = self.find_instrument(c, &r.symbol)
        if r.inst_idx < 0:
            return JS_OK  # a symbol the engine does not track: counted and skipped
        return self.convert(c, is_order, r, &s_qty, &s_filled, &s_price, &s_stop, &s_realized)

    cdef JsonStatus convert(self, JsonCursor* c, bint is_order, BotRecord* r, JsonSpan* qty,
                            JsonSpan* filled, JsonSpan* price, JsonSpan* stop,
                            JsonSpan* realized) noexcept nogil:
        cdef const InstSpec* s = &self.specs[r.inst_idx]
        cdef JsonStatus st
        r.bad_field = F_QTY
        st = span_steps(c, qty, s.qty_decimals, s.lot_units, False, &r.qty_lots)
        if st == JS_OK and is_order:
            r.bad_field = F_FILLED
            st = span_steps(c, filled, s.qty_decimals, s.lot_units, False, &r.filled_lots)
        if st == JS_OK and r.flags & BF_PRICE:
            r.bad_field = F_PRICE
            st = span_steps(c, price, s.price_decimals, s.tick_units, False, &r.price_ticks)
        if st == JS_OK and r.flags & BF_STOP:
            r.bad_field = F_STOP
            st = span_steps(c, stop, s.price_decimals, s.tick_units, False, &r.stop_ticks)
        if st == JS_OK and r.flags & BF_REALIZED:
            r.bad_field = F_REALIZED
            st = span_steps(c, realized, s.quote_decimals, s.quote_step_units, True, &r.realized_units)
        if st == JS_OK and not is_order and r.qty_lots != 0 and not r.flags & BF_ENTRY:
            r.bad_field = F_ENTRY
            return js_fail(c, JS_MISSING_FIELD, qty.start)
        if st == JS_OK:
            r.bad_field = 0
        return st

    cdef int find_instrument(self, const JsonCursor* c, const JsonSpan* span) noexcept nogil:
        # O(instruments) memcmp scan: the engine tracks a handful of symbols per venue.
        cdef Py_ssize_t i
        for i in range(self.n_specs):
            if js_span_is(c, span, self.specs[i].name, self.specs[i].name_len):
                return <int>i
        return -1

    cdef int raise_record(self, JsonCursor* c, JsonStatus st, const BotRecord* rec) except -1:
        if self.oom:
            self.oom = False
            raise MemoryError("botplatform snapshot scratch")
        what = _KIND_NAMES.get(rec.kind, "User data")
        field = _FIELD_NAMES.get(rec.bad_field)
        if st == JS_BAD_FIELD and 0 <= c.err_pos < c.len:
            end = c.err_pos
            while end < c.len and end - c.err_pos < 40 and c.buf[end] != b'"':
                end += 1
            value = c.buf[c.err_pos:end].decode("utf-8", "replace")
            raise DecodeError(f"botplatform {what} {field}: unknown value {value!r}", c.err_pos)
        js_raise(c, st, f"botplatform {what}" + (f" {field}" if field else ""))

    # ---- applying (GIL: Account calls) -------------------------------------------------
    cdef int note_refusal(self, uint64_t before, str what, object object_id) except -1:
        # The Account (feed mode) refused an update: it counted it in error_count and
        # handed the error to its on_error callback; the state is unchanged.
        if self.account.error_count != before:
            self.rejected += 1
            self.venue.on_refused(what, object_id)
        return 0

    cdef bint apply_snapshot(self, JsonCursor* c, const BotRecord* rec, Py_ssize_t n_pos, Py_ssize_t n_ord,
                             int64_t seq, int64_t recv_ns) except -1:
        """Apply a Snapshot's positions, orders and energy as one Account batch: every
        change or none (False: the Account refused an item; each refusal is counted and
        reported as usual), and the callbacks only after the whole snapshot is in place.
        O(items)."""
        cdef Account acct = self.account
        cdef Py_ssize_t i
        cdef list notify = []
        cdef uint64_t before
        energy_ok = None
        # The position bookkeeping changes with the items (later items read it): kept to
        # be put back if the batch is rolled back.
        saved_current = dict(self.current_position)
        saved_known = set(self.known_positions)
        acct.begin_batch()
        try:
            for i in range(n_pos):
                self.apply_position(c, &self.snap_positions[i], True, seq, recv_ns, notify)
            for i in range(n_ord):
                self.apply_order(c, &self.snap_orders[i], seq, recv_ns, notify)
            if rec.energy >= 0:
                before = acct.error_count
                energy_ok = acct.on_nft_energy_update(rec.energy, rec.ts_ns)
                self.note_refusal(before, "NftEnergyUpdate", None)
        except BaseException:
            acct.abort_batch()
            self.current_position = saved_current
            self.known_positions = saved_known
            raise
        if not acct.commit_batch():
            self.current_position = saved_current
            self.known_positions = saved_known
            return False
        # Committed: the Account has delivered its own notifications; now the feed's.
        for kind, key in notify:
            if kind == 0:
                self.dispatch.position(acct.position(key), recv_ns)
            else:
                self.dispatch.order(acct.order(key), recv_ns)
        if energy_ok is not None:
            self.venue.on_energy_applied(rec.energy, rec.ts_ns, bool(energy_ok), recv_ns)
        return True

    cdef int apply_position(self, JsonCursor* c, const BotRecord* rec, bint snapshot, int64_t seq,
                            int64_t recv_ns, list notify) except -1:
        # notify None: dispatch the change now; a list (a snapshot's batch): append
        # (0, symbol) for apply_snapshot to dispatch after the commit.
        if rec.inst_idx < 0:
            self.unknown_symbol += 1
            self.venue.on_unknown(None, js_span_to_str(c, &rec.symbol))
            return 0
        cdef Instrument inst = self.instruments[rec.inst_idx]
        cdef str sym = inst.symbol
        cdef str pid = js_span_to_str(c, &rec.id)
        cdef bint create = rec.kind == BK_POSITION_CREATE
        current = self.current_position.get(sym)
        if snapshot:
            if pid in self.known_positions:
                if pid != current:
                    return 0  # an earlier round trip on this symbol: its end was applied then
                create = False
            else:
                create = True
        elif not create and pid != current and pid in self.known_positions:
            self.superseded += 1
            self.venue.on_superseded(pid, sym)
            return 0
        qty = rec.qty_lots if rec.side == 0 else -rec.qty_lots
        entry = js_span_to_str(c, &rec.entry_price) if rec.flags & BF_ENTRY else None
        realized = rec.realized_units if rec.flags & BF_REALIZED else None
        cdef Account acct = self.account
        cdef uint64_t before = acct.error_count
        if create:
            ok = acct.on_position_create(pid, sym, POSITION_STATUS_NAMES[rec.status], qty, entry, None,
                                         realized, rec.ts_ns)
            if ok:
                self.known_positions.add(pid)
                self.current_position[sym] = pid
        else:
            ok = acct.on_position_update(pid, sym, POSITION_STATUS_NAMES[rec.status], qty, entry, None,
                                         realized, rec.ts_ns)
        self.note_refusal(before, "PositionCreate" if create else "PositionUpdate", pid)
        if ok and self.dispatch.position_cbs:
            if notify is None:
                self.dispatch.position(acct.position(sym), recv_ns)
            else:
                notify.append((0, sym))
        return 0

    cdef int apply_order(self, JsonCursor* c, const BotRecord* rec, int64_t seq, int64_t recv_ns,
                         list notify) except -1:
        # notify: as in apply_position ((1, order id) entries).
        if rec.inst_idx < 0:
            self.unknown_symbol += 1
            self.venue.on_unknown(None, js_span_to_str(c, &rec.symbol))
            return 0
        cdef Instrument inst = self.instruments[rec.inst_idx]
        cdef str oid = js_span_to_str(c, &rec.id)
        price = rec.price_ticks if rec.flags & BF_PRICE else None
        stop = rec.stop_ticks if rec.flags & BF_STOP else None
        cdef Account acct = self.account
        cdef uint64_t before = acct.error_count
        if rec.kind == BK_ORDER_CREATE:
            ok = acct.on_position_order_create(
                js_span_to_str(c, &rec.position_id), oid, inst.symbol, ORDER_SIDE_NAMES[rec.side],
                ORDER_TYPE_NAMES[rec.order_type], ORDER_STATUS_NAMES[rec.status], rec.qty_lots, price,
                stop, rec.filled_lots, js_span_to_str(c, &rec.client_id) if rec.flags & BF_CLIENT_ID else "",
                rec.ts_ns, seq)
        else:
            ok = acct.on_position_order_update(oid, ORDER_STATUS_NAMES[rec.status], rec.qty_lots, price,
                                               stop, rec.filled_lots, rec.ts_ns, seq)
        self.note_refusal(before, "PositionOrderCreate" if rec.kind == BK_ORDER_CREATE
                          else "PositionOrderUpdate", oid)
        if ok and self.dispatch.order_cbs:
            if notify is None:
                self.dispatch.order(acct.order(oid), recv_ns)
            else:
                notify.append((1, oid))
        return 0

    cdef int apply_energy(self, int64_t energy, int64_t ts_ns, int64_t recv_ns) except -1:
        cdef Account acct = self.account
        cdef uint64_t before = acct.error_count
        ok = acct.on_nft_energy_update(energy, ts_ns)
        self.note_refusal(before, "NftEnergyUpdate", None)
        self.venue.on_energy_applied(energy, ts_ns, bool(ok), recv_ns)
        return 0
