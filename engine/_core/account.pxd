# C-level contract of an Account: orders, netting positions and balances in typed memory.
#
# Memory: `order_recs`, `position_recs` and `balance_recs` are PyMem-owned arrays freed in
# __dealloc__. They grow by reallocation, so a pointer into them is valid only until
# the next call that may add an order, instrument or asset; never keep one across a
# user callback.
from libc.stdint cimport int32_t, int64_t, uint64_t
from engine._core.orders cimport OrderRec, Order
from engine._core.positions cimport PositionRec

# One asset balance: exact integers at `decimals` fraction digits (value * 10**-decimals).
ctypedef struct BalanceRec:
    int64_t total
    int64_t available
    int64_t reserved
    int64_t updated_ns
    int32_t decimals

cdef class Account:
    cdef OrderRec* order_recs
    cdef Py_ssize_t n_orders
    cdef Py_ssize_t cap_orders
    # Python-boundary indexes: venue order id (str) -> slot, client id -> slot.
    cdef dict order_slots
    cdef dict client_slots
    cdef list order_ids
    cdef list client_ids

    cdef PositionRec* position_recs       # one per instrument slot (netting)
    cdef Py_ssize_t n_instruments
    cdef Py_ssize_t cap_instruments
    cdef list instruments
    cdef dict instrument_slots          # symbol -> slot
    cdef dict position_ids              # venue position id -> instrument slot

    cdef BalanceRec* balance_recs
    cdef Py_ssize_t n_assets
    cdef Py_ssize_t cap_assets
    cdef list assets
    cdef dict asset_slots               # asset -> slot
    cdef dict asset_decimals            # asset -> decimals for balances sent as strings

    cdef readonly str account_id
    cdef readonly bint feed_mode
    cdef readonly uint64_t error_count
    cdef readonly uint64_t stale_count
    cdef readonly uint64_t callback_error_count
    cdef readonly uint64_t fill_count
    cdef int callback_depth             # > 0 while a user callback runs
    cdef object on_order_cb
    cdef object on_position_cb
    cdef object on_balance_cb
    cdef object on_error_cb

    cdef void _call(self, object cb, object arg, object arg2=*) noexcept
    cdef int _fail(self, object exc) except -1
    cdef int _notify_order(self, Py_ssize_t slot) except -1
    cdef int _notify_position(self, Py_ssize_t islot) except -1
    cdef Order _order_obj(self, Py_ssize_t slot)
    cdef Py_ssize_t _slot_of(self, object order_id) except -2
    cdef Py_ssize_t _instrument_slot(self, object symbol) except -1
    cdef Py_ssize_t _add_rec(self, str order_id, str client_id, const OrderRec* rec) except -1
    cdef int _snapshot(self, Py_ssize_t slot, int status, int64_t qty_lots, int64_t filled_lots,
                       int64_t price_ticks, int64_t stop_price_ticks, int64_t cost, int64_t ts_ns,
                       int64_t seq, bint fold_fills) except -1
    cdef Py_ssize_t _asset_slot(self, str asset) except -1
    cdef object _balance_obj(self, Py_ssize_t slot)
    cdef object _venue_position(self, bint create, str position_id, str symbol, object status, object qty,
                                object entry_price, object side, object realized_pnl, int64_t ts_ns)
    # C entry for decoders: apply a fill to the order in `slot` and its position.
    cdef int fill_slot(self, Py_ssize_t slot, int64_t trade_id, int64_t price_ticks, int64_t qty_lots,
                       int64_t fee, int64_t ts_ns) except -1
