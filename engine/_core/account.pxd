# C-level contract of an Account: orders, netting positions and balances in typed memory.
#
# Memory: `order_recs`, `order_aux`, `free_slots`, `position_recs` and `balance_recs`
# are PyMem-owned arrays freed in __dealloc__. They grow by reallocation, so a pointer
# into them is valid only until the next call that may add an order, instrument or
# asset; never keep one across a user callback.
#
# Slots: an order keeps its slot for as long as it is tracked (nothing is ever moved).
# A closed order is forgotten by the retention policy (max_closed_orders) or by
# remove_closed_orders; its slot then goes to `free_slots` and a later order reuses it.
# So a slot held across calls is safe while its order is open; look a closed order up
# by id (order_slot), never by a remembered slot. A free slot has instrument_idx -1.
#
# Retention: each order that closes gets closed_seq = ++close_counter. When more than
# max_closed_orders + prune_slack orders are closed, the oldest closed ones (smallest
# closed_seq) are freed until max_closed_orders remain. The prune runs only at the end
# of an order-changing call, after its callbacks, and never inside a callback or a
# batch (it is deferred to the next such call), so no loop of the Account ever holds
# a slot that a prune frees.
#
# Batches (whole-or-nothing multi-item snapshots), for decoders:
#
#     acct.begin_batch()
#     try:
#         acct.on_position_update(...)      # any Account calls, feed mode or not
#         acct.on_position_order_update(...)
#         acct.on_balances(...)
#     except BaseException:
#         acct.abort_batch()                # every change of the batch rolled back
#         raise
#     applied = acct.commit_batch()         # 1: kept and notified; 0: rolled back
#
# (Python: `with acct.batch() as b: ...` then `b.applied`.) While a batch is open:
# - every call applies (or refuses) exactly as outside a batch, so later items see
#   earlier ones, but no callback runs: order/position/balance notifications are
#   queued (one per changed record, with its state at commit) and errors reported to
#   on_error are queued too;
# - the first write to each order, position, balance record, position id, new order
#   or new asset is recorded in an undo log (a copy of the record, or what to remove);
# - a refused call (feed mode: counted in error_count, returns False/0; otherwise it
#   raises) marks the batch failed.
# commit_batch: a failed batch is rolled back from the undo log (newest first), the
# queued errors are delivered and it returns 0; else the queued notifications are
# delivered after the whole batch is in place and it returns 1. abort_batch rolls
# back unconditionally. Counters: error_count and stale_count keep what happened;
# fill_count and the order/closed counts are restored by a rollback. Instruments added
# inside a batch stay. Batches do not nest (EngineError); remove_closed_orders is
# refused inside one. Decoders should check the result of commit_batch (or
# error_count before/after) rather than individual calls, and dispatch their own
# callbacks only after commit_batch returned 1.
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

# Per-order bookkeeping the OrderRec does not carry; parallel to order_recs.
ctypedef struct OrderAux:
    int64_t folded_lots     # filled lots already folded into the position
    int64_t folded_cost     # the venue cost (quote units) of those lots
    int64_t closed_seq      # 1, 2, ... in closing order; 0 while open (or free)

cdef class Account:
    cdef OrderRec* order_recs
    cdef OrderAux* order_aux
    cdef Py_ssize_t* free_slots         # stack of freed slots, capacity cap_orders
    cdef Py_ssize_t n_free
    cdef Py_ssize_t n_orders            # slots in use or free (high-water mark)
    cdef Py_ssize_t n_live              # orders tracked
    cdef Py_ssize_t cap_orders
    # Python-boundary indexes: venue order id (str) -> slot, client id -> slot.
    cdef dict order_slots
    cdef dict client_slots
    cdef list order_ids                 # by slot; "" for a free slot
    cdef list client_ids

    # Retention of closed orders (see above). prune_at = max + slack (PY_SSIZE_T_MAX: never).
    cdef readonly Py_ssize_t max_closed_orders   # -1: keep every closed order
    cdef Py_ssize_t prune_at
    cdef Py_ssize_t n_closed
    cdef int64_t close_counter
    cdef readonly uint64_t pruned_count

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

    # Batch state (see above).
    cdef readonly bint in_batch
    cdef bint batch_failed
    cdef list undo_log                  # tuples, applied newest first on rollback
    cdef set undo_seen                  # records already saved in this batch
    cdef list batch_queue               # (kind, key) notifications; kind "e": an error
    cdef tuple batch_counters           # counters restored by a rollback

    cpdef int begin_batch(self) except -1
    cpdef int commit_batch(self) except -1
    cpdef int abort_batch(self) except -1
    cdef int _rollback(self) except -1
    cdef int _deliver(self, list queue, bint state) except -1
    cdef bint _first_touch(self, int kind, object key) except -1
    cdef int _save_order(self, Py_ssize_t slot) except -1
    cdef int _save_position(self, Py_ssize_t islot) except -1
    cdef int _save_balance(self, Py_ssize_t slot) except -1
    cdef int _save_position_id(self, str position_id) except -1

    cdef void _call(self, object cb, object arg, object arg2=*) noexcept
    cdef int _fail(self, object exc) except -1
    cdef int _notify_order(self, Py_ssize_t slot) except -1
    cdef int _notify_position(self, Py_ssize_t islot) except -1
    cdef int _notify_balance(self, Py_ssize_t slot) except -1
    cdef Order _order_obj(self, Py_ssize_t slot)
    cdef Py_ssize_t _slot_of(self, object order_id) except -2
    cdef Py_ssize_t _instrument_slot(self, object symbol) except -1
    cdef Py_ssize_t _add_rec(self, str order_id, str client_id, const OrderRec* rec) except -1
    cdef void _mark_closed(self, Py_ssize_t slot) noexcept
    cdef int _prune_point(self) except -1
    cdef Py_ssize_t _free_closed(self, int64_t cutoff) except -1
    cdef int _prune_position_ids(self) except -1
    cdef int _fold_plan(self, str order_id, const OrderRec* after, int64_t cost, OrderAux* aux,
                        int64_t* lots_out, int64_t* cost_out) except -1
    cdef int _snapshot(self, Py_ssize_t slot, int status, int64_t qty_lots, int64_t filled_lots,
                       int64_t price_ticks, int64_t stop_price_ticks, int64_t cost, int64_t ts_ns,
                       int64_t seq, bint fold_fills) except -1
    cdef Py_ssize_t _asset_slot(self, str asset) except -1
    cdef int _write_balance(self, Py_ssize_t slot, int64_t total, int64_t available, int64_t reserved,
                            int decimals, int64_t ts_ns) except -1
    cdef object _balance_obj(self, Py_ssize_t slot)
    cdef object _venue_position(self, bint create, str position_id, str symbol, object status, object qty,
                                object entry_price, object side, object realized_pnl, int64_t ts_ns)
    # C entry for decoders: apply a fill to the open order in `slot` and its position.
    cdef int fill_slot(self, Py_ssize_t slot, int64_t trade_id, int64_t price_ticks, int64_t qty_lots,
                       int64_t fee, int64_t ts_ns) except -1
