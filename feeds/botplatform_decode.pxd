# C-level contract of the bot platform frame decoder (schemas in feeds/botplatform.py).
#
# One BotPlatformDecoder per venue connection object (its sequence and position state
# survive reconnects). It decodes every frame in place with engine._core.jscan: the
# envelope, then the hot User messages (PositionCreate/Update, PositionOrderCreate/
# Update, NftEnergyUpdate, Snapshot) field by field into a BotRecord on the stack,
# converting decimal strings to ticks/lots/quote units exactly with the instrument's
# decimals; only after the whole frame validated are the records applied to the
# Account. Cold messages (Auth, Symbol, Notification) are handed to the venue as the
# raw bytes of their `data` object.
from libc.stdint cimport int32_t, int64_t, uint64_t

from engine._core.jscan cimport JsonCursor, JsonSpan, JsonStatus
from engine._core.account cimport Account
from feeds._hotpath cimport FrameSink, Dispatch

cdef enum EventKind:
    EV_NONE = 0
    EV_USER = 1
    EV_SYMBOL = 2
    EV_AUTH = 3
    EV_HEARTBEAT = 4
    EV_OTHER = 5

cdef enum BotKind:
    BK_NONE = 0
    BK_POSITION_CREATE = 1
    BK_POSITION_UPDATE = 2
    BK_ORDER_CREATE = 3
    BK_ORDER_UPDATE = 4
    BK_ENERGY = 5
    BK_SNAPSHOT = 6
    BK_COLD = 7            # Notification and user types this client does not apply

# BotRecord.flags
cdef enum:
    BF_PRICE = 1           # price given (not null)
    BF_STOP = 2            # stop_price given
    BF_ENTRY = 4           # entry_price given
    BF_REALIZED = 8        # realized_pnl given
    BF_CLIENT_ID = 16      # client_id given

# One instrument as the decoder matches and converts it. `name` points into a bytes
# object owned by BotPlatformDecoder.instrument_names (alive as long as the decoder).
ctypedef struct InstSpec:
    const char* name
    Py_ssize_t name_len
    int32_t price_decimals
    int64_t tick_units
    int32_t qty_decimals
    int64_t lot_units
    int32_t quote_decimals     # price_decimals + qty_decimals
    int64_t quote_step_units   # tick_units * lot_units: one quote unit (engine.Position)

# One decoded position or order object. Spans BORROW the frame: valid only while the
# call that received it runs (records are applied before BotPlatformDecoder.feed returns).
ctypedef struct BotRecord:
    int32_t kind
    int32_t inst_idx           # index into the decoder's instruments; -1 unknown symbol
    int32_t status             # index into the status table of the kind
    int32_t side               # 0 Buy/Long, 1 Sell/Short
    int32_t order_type
    int32_t flags
    int32_t bad_field          # F_* bit (botplatform_decode.pyx) of the field an error is about
    JsonSpan type_name         # the `type` string of the data object
    JsonSpan raw               # the whole data object (cold messages are handed over raw)
    JsonSpan id
    JsonSpan position_id
    JsonSpan client_id
    JsonSpan symbol
    JsonSpan entry_price
    int64_t qty_lots           # unsigned as sent (position side gives the sign)
    int64_t filled_lots
    int64_t price_ticks
    int64_t stop_ticks
    int64_t realized_units     # quote units (tick x lot), signed
    int64_t ts_ns
    int64_t energy             # NftEnergyUpdate / Snapshot: units of 1e-8; -1 absent


cdef class BotPlatformDecoder(FrameSink):
    cdef object venue                  # feeds.botplatform.BotPlatformVenue (cold handlers)
    cdef Account account               # the engine's Account (feed mode) the User stream updates
    cdef Dispatch dispatch
    cdef list instruments              # Instrument objects, InstSpec order
    cdef list instrument_names         # bytes owning InstSpec.name
    cdef InstSpec* specs               # PyMem-owned, freed in __dealloc__
    cdef Py_ssize_t n_specs
    # Snapshot scratch: PyMem_Raw-owned record arrays (freed in __dealloc__) grown as needed; their spans borrow
    # the frame being decoded and are dead once feed() returns.
    cdef BotRecord* snap_positions
    cdef Py_ssize_t snap_positions_cap
    cdef BotRecord* snap_orders
    cdef Py_ssize_t snap_orders_cap
    cdef dict current_position         # symbol -> id of its live bot position (netting)
    cdef set known_positions           # every position id created in the account
    cdef str _user_id                  # from AuthOk; User frames for others are refused
    cdef bytes _user_id_utf8
    cdef const char* _user_id_ptr      # into _user_id_utf8 (owned by self, replaced together)
    cdef Py_ssize_t _user_id_len
    cdef bint oom                      # a snapshot scratch array could not grow
    cdef public int64_t last_seq       # last User seq applied; -1 before any snapshot
    cdef public bint synced            # this connection's Snapshot was applied
    cdef readonly int64_t heartbeats
    cdef readonly int64_t applied          # User messages applied (snapshot counts as 1)
    cdef readonly int64_t stale_messages   # seq <= last_seq: skipped
    cdef readonly int64_t unsynced_dropped # User messages before the connection's snapshot
    cdef readonly int64_t rejected         # well-formed updates the account refused
    cdef readonly int64_t superseded       # updates for a position replaced by a newer one
    cdef readonly int64_t unknown_symbol   # objects for symbols the engine does not track
    cdef readonly int64_t unknown_messages # unknown events / user types (skipped)

    cdef int decode_frame(self, JsonCursor* c, int64_t recv_ns) except -1
    cdef JsonStatus decode_user_data(self, JsonCursor* c, BotRecord* rec, Py_ssize_t* n_pos,
                                     Py_ssize_t* n_ord) noexcept nogil
    cdef JsonStatus decode_snapshot(self, JsonCursor* c, BotRecord* rec, Py_ssize_t* n_pos,
                                    Py_ssize_t* n_ord) noexcept nogil
    cdef JsonStatus decode_object(self, JsonCursor* c, bint is_order, BotRecord* rec) noexcept nogil
    cdef JsonStatus convert(self, JsonCursor* c, bint is_order, BotRecord* rec, JsonSpan* qty,
                            JsonSpan* filled, JsonSpan* price, JsonSpan* stop,
                            JsonSpan* realized) noexcept nogil
    cdef int find_instrument(self, const JsonCursor* c, const JsonSpan* span) noexcept nogil
    cdef int grow(self, bint orders, Py_ssize_t n) noexcept nogil
    cdef int raise_record(self, JsonCursor* c, JsonStatus st, const BotRecord* rec) except -1
    cdef bint apply_snapshot(self, JsonCursor* c, const BotRecord* rec, Py_ssize_t n_pos, Py_ssize_t n_ord,
                             int64_t seq, int64_t recv_ns) except -1
    cdef int apply_position(self, JsonCursor* c, const BotRecord* rec, bint snapshot, int64_t seq,
                            int64_t recv_ns, list notify) except -1
    cdef int apply_order(self, JsonCursor* c, const BotRecord* rec, int64_t seq, int64_t recv_ns,
                         list notify) except -1
    cdef int apply_energy(self, int64_t energy, int64_t ts_ns, int64_t recv_ns) except -1
    cdef int note_refusal(self, uint64_t before, str what, object object_id) except -1
