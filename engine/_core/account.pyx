"""Account: orders, netting positions and balances in typed memory, with callbacks.

Orders live in one OrderRec array (slot = index); a dict maps the venue's order id to
its slot at the Python boundary (one dict lookup per call; decoders holding the slot
call ``fill_slot`` directly). Positions are one PositionRec per instrument slot.
"""
import logging
from collections import namedtuple

import numpy as np

from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memset, memcmp, memcpy

from engine._core.types cimport SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument
from engine._core.orders cimport (
    OrderRec, OrderResult, Order, OR_OK, OR_UNCHANGED, OR_STALE, OR_ERROR, OR_BAD_QTY, OR_OVERFLOW,
    OS_PENDING_NEW, OS_NEW, OS_PARTIALLY_FILLED, OS_CANCELED, OS_COUNT, OE_FILL, OE_CANCELED, OE_COUNT,
    OT_LIMIT, OT_COUNT, order_check_fill, order_commit_fill, order_apply_event, order_apply_snapshot,
    order_init, order_error, order_is_closed, order_status_name, order_validate_new,
)
from engine._core.venue_fields cimport (
    parse_order_status, parse_order_type, parse_position_status, parse_side, lots_field, ticks_field,
    index_lookup, item_field, quote_units_any, scaled_amount, entry_notional,
)
from engine._core.positions cimport (
    PositionRec, Position, i128, i128_from_py, position_init, position_apply_fill,
    position_apply_fill_notional, position_set_status, position_error, position_status_name,
    PS_CREATED, PS_COMPLETED, PS_FAILED, PS_COUNT,
)

from engine.errors import DecimalError, EngineError, InvalidTransition
from engine._core.orders import OrderInputError

log = logging.getLogger("engine.account")

Balance = namedtuple("Balance", "total available reserved decimals updated_ns")
Balance.__doc__ = """One asset balance: exact integers at ``decimals`` fraction digits."""

# Mirrors OrderRow below, field for field (tests check the sizes match).
ORDER_DTYPE = np.dtype({
    "names": ["price_ticks", "stop_price_ticks", "qty_lots", "filled_lots", "cost", "created_ns",
              "updated_ns", "seq", "slot", "instrument_idx", "side", "order_type", "status"],
    "formats": ["<i8"] * 8 + ["<i4", "<i4", "u1", "u1", "u1"],
    "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 64, 68, 72, 73, 74],
    "itemsize": 80,
})

ctypedef struct OrderRow:
    int64_t price_ticks
    int64_t stop_price_ticks
    int64_t qty_lots
    int64_t filled_lots
    int64_t cost
    int64_t created_ns
    int64_t updated_ns
    int64_t seq
    int32_t slot
    int32_t instrument_idx
    uint8_t side
    uint8_t order_type
    uint8_t status
    uint8_t pad[5]

ORDER_ROW_SIZE = sizeof(OrderRow)

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef class Account:
    """Orders, netting positions (one per instrument) and balances of one venue account.

    ``Account(account_id="", instruments=(), *, feed_mode=False, max_closed_orders=10_000)``;
    more instruments can be added with ``add_instrument``.

    Units: prices int64 ticks, quantities int64 lots, money exact integer quote units
    (tick * lot, see ``engine.Position``), balances exact int64 at a per-asset
    ``decimals`` scale, times int64 ns.

    Errors: a bad or illegal update raises (``InvalidTransition``,
    ``OrderInputError``, ``DecimalError``) and changes nothing. With
    ``feed_mode=True`` the same errors are counted (``error_count``), handed to the
    ``on_error`` callback and the call returns False instead, the state unchanged.
    Stale updates (older sequence or time) are ignored and counted (``stale_count``).

    Callbacks (``set_callbacks``) run after the state changed, once per changed
    order (``on_order(Order)``, a snapshot copy), position (``on_position(Position)``,
    a snapshot copy) or balance (``on_balance(asset, Balance)``); an exception in a
    callback is logged with its traceback, counted in ``callback_error_count`` and
    swallowed, so user code never leaves the account half-updated.

    Retention: at most ``max_closed_orders`` closed (FILLED, CANCELED, EXPIRED,
    REJECTED) orders are kept (default 10,000; ``None`` keeps all). Once more than
    that plus a slack of ``max_closed_orders // 8 + 1`` have closed, the ones that
    closed earliest are forgotten (their ids become unknown, their slots are reused),
    at the end of an order-changing call and never inside a callback or a batch, so a
    bot's memory stays flat. An order that closed stays readable until at least
    ``max_closed_orders`` later orders closed. O(slots) per prune, amortized O(1).
    Venue position ids (one per round trip) are bounded the same way: each
    instrument's newest id is always kept, and the newest ``max_closed_orders``
    others.

    Batches: ``with acct.batch(): ...`` (or ``begin_batch`` / ``commit_batch`` /
    ``abort_batch``) applies several calls whole or not at all, callbacks after the
    whole batch (see ``batch``).
    """

    def __cinit__(self):
        self.order_recs = NULL
        self.order_aux = NULL
        self.free_slots = NULL
        self.position_recs = NULL
        self.balance_recs = NULL

    def __init__(self, str account_id="", instruments=(), *, bint feed_mode=False,
                 max_closed_orders=10_000):
        if max_closed_orders is None:
            self.max_closed_orders = -1
            self.prune_at = PY_SSIZE_T_MAX
        else:
            if not isinstance(max_closed_orders, int) or not (0 <= max_closed_orders < (1 << 40)):
                raise OrderInputError(f"max_closed_orders must be None or an int in [0, 2**40), "
                                      f"got {max_closed_orders!r}")
            self.max_closed_orders = max_closed_orders
            self.prune_at = max_closed_orders + max_closed_orders // 8 + 1
        self.order_slots = {}
        self.client_slots = {}
        self.order_ids = []
        self.client_ids = []
        self.instruments = []
        self.instrument_slots = {}
        self.position_ids = {}
        self.assets = []
        self.asset_slots = {}
        self.asset_decimals = {}
        self.feed_mode = feed_mode
        self.account_id = account_id
        for inst in instruments:
            self.add_instrument(inst)

    def __dealloc__(self):
        PyMem_Free(self.order_recs)
        PyMem_Free(self.order_aux)
        PyMem_Free(self.free_slots)
        PyMem_Free(self.position_recs)
        PyMem_Free(self.balance_recs)

    # ------------------------------------------------------------------ plumbing

    def set_callbacks(self, *, on_order=None, on_position=None, on_balance=None, on_error=None):
        """Register callbacks (None removes one). See the class docstring for when they
        run and what they receive."""
        self.on_order_cb = on_order
        self.on_position_cb = on_position
        self.on_balance_cb = on_balance
        self.on_error_cb = on_error

    cdef void _call(self, object cb, object arg, object arg2=None) noexcept:
        # The one place user callbacks run: errors are logged, counted, swallowed.
        self.callback_depth += 1
        try:
            if arg2 is None:
                cb(arg)
            else:
                cb(arg, arg2)
        except Exception:
            self.callback_error_count += 1
            log.exception("account callback %r failed", cb)
        finally:
            self.callback_depth -= 1

    cdef int _fail(self, object exc) except -1:
        self.error_count += 1
        if self.in_batch:
            self.batch_failed = True
        if not self.feed_mode:
            raise exc
        if self.in_batch:
            self.batch_queue.append(("e", exc))
        elif self.on_error_cb is not None:
            self._call(self.on_error_cb, exc)
        return 0

    cdef int _notify_order(self, Py_ssize_t slot) except -1:
        if self.in_batch:
            self.batch_queue.append(("o", slot))
        elif self.on_order_cb is not None:
            self._call(self.on_order_cb, self._order_obj(slot))
        return 0

    cdef int _notify_position(self, Py_ssize_t islot) except -1:
        if self.in_batch:
            self.batch_queue.append(("p", islot))
        elif self.on_position_cb is not None:
            self._call(self.on_position_cb,
                       Position.from_rec(&self.position_recs[islot], self.instruments[islot],
                                         self.instruments[islot].symbol))
        return 0

    cdef int _notify_balance(self, Py_ssize_t slot) except -1:
        if self.in_batch:
            self.batch_queue.append(("b", slot))
        elif self.on_balance_cb is not None:
            self._call(self.on_balance_cb, self.assets[slot], self._balance_obj(slot))
        return 0

    # ------------------------------------------------------------------ batches

    def batch(self):
        """A context manager applying every Account call in its body whole or not at all:
        ``with acct.batch() as b: ...``; ``b.applied`` is True when the batch was kept.
        Callbacks (state changes, then nothing else; or the queued errors of a failed
        batch) run after the body, once per changed record with its final state. A
        refused call in the body (feed mode: counted, returns False) rolls every change
        of the body back; an exception leaving the body rolls back and propagates.
        O(records touched) to commit or roll back. See ``begin_batch``."""
        return AccountBatch(self)

    cpdef int begin_batch(self) except -1:
        """Open a batch (C entry for decoders; see account.pxd for the protocol).
        ``EngineError`` when one is already open. O(1)."""
        if self.in_batch:
            raise EngineError("Account batches do not nest: a batch is already open")
        if self.callback_depth:
            raise EngineError("begin_batch cannot run inside an account callback")
        self.in_batch = True
        self.batch_failed = False
        self.undo_log = []
        self.undo_seen = set()
        self.batch_queue = []
        self.batch_counters = (self.fill_count, self.n_live, self.n_closed, self.close_counter)
        return 0

    cpdef int commit_batch(self) except -1:
        """Close the batch: keep it and deliver its notifications (returns 1), or, when
        any call in it was refused, roll it back and deliver the queued errors
        (returns 0). ``EngineError`` without an open batch. O(records touched)."""
        if not self.in_batch:
            raise EngineError("commit_batch without an open batch")
        cdef bint failed = self.batch_failed
        if failed:
            self._rollback()
        queue = self.batch_queue
        self.in_batch = False
        self.undo_log = self.undo_seen = self.batch_queue = None
        self._deliver(queue, not failed)
        self._prune_point()
        return 0 if failed else 1

    cpdef int abort_batch(self) except -1:
        """Close the batch rolling back every change made in it; queued errors are
        delivered, state notifications dropped. Returns 0. ``EngineError`` without an
        open batch. O(records touched)."""
        if not self.in_batch:
            raise EngineError("abort_batch without an open batch")
        self._rollback()
        queue = self.batch_queue
        self.in_batch = False
        self.undo_log = self.undo_seen = self.batch_queue = None
        self._deliver(queue, False)
        return 0

    cdef int _deliver(self, list queue, bint state) except -1:
        # Errors in the order they happened; then each changed record once, in the order
        # of its first change, with its state now.
        for kind, key in queue:
            if kind == "e" and self.on_error_cb is not None:
                self._call(self.on_error_cb, key)
        if not state:
            return 0
        for kind, key in dict.fromkeys([item for item in queue if item[0] != "e"]):
            if kind == "o":
                # Still this order's slot: prunes and remove_closed_orders never run
                # inside a callback, and the batch (which prunes nothing) just closed.
                self._notify_order(key)
            elif kind == "p":
                self._notify_position(key)
            else:
                self._notify_balance(key)
        return 0

    cdef bint _first_touch(self, int kind, object key) except -1:
        # Undo entries: (kind, key, ...) with kind 0 order, 1 added order, 2 position,
        # 3 position id, 4 balance, 5 added asset. Each record is saved once per batch.
        k = (kind, key)
        if k in self.undo_seen:
            return False
        self.undo_seen.add(k)
        return True

    cdef int _save_order(self, Py_ssize_t slot) except -1:
        if self._first_touch(0, slot):
            self.undo_log.append((0, slot,
                                  PyBytes_FromStringAndSize(<char*>&self.order_recs[slot], sizeof(OrderRec)),
                                  PyBytes_FromStringAndSize(<char*>&self.order_aux[slot], sizeof(OrderAux))))
        return 0

    cdef int _save_position(self, Py_ssize_t islot) except -1:
        if self._first_touch(2, islot):
            self.undo_log.append((2, islot, PyBytes_FromStringAndSize(<char*>&self.position_recs[islot],
                                                                      sizeof(PositionRec))))
        return 0

    cdef int _save_balance(self, Py_ssize_t slot) except -1:
        if self._first_touch(4, slot):
            self.undo_log.append((4, slot, PyBytes_FromStringAndSize(<char*>&self.balance_recs[slot],
                                                                     sizeof(BalanceRec))))
        return 0

    cdef int _save_position_id(self, str position_id) except -1:
        if self._first_touch(3, position_id):
            self.undo_log.append((3, position_id, self.position_ids.get(position_id)))
        return 0

    cdef int _rollback(self) except -1:
        cdef Py_ssize_t slot
        for entry in reversed(self.undo_log):
            kind = entry[0]
            if kind == 0:
                slot = entry[1]
                memcpy(&self.order_recs[slot], PyBytes_AS_STRING(entry[2]), sizeof(OrderRec))
                memcpy(&self.order_aux[slot], PyBytes_AS_STRING(entry[3]), sizeof(OrderAux))
            elif kind == 1:
                _, slot, from_free, cid, old_client_slot = entry
                del self.order_slots[self.order_ids[slot]]
                if cid:
                    if old_client_slot is None:
                        del self.client_slots[cid]
                    else:
                        self.client_slots[cid] = old_client_slot
                self.order_recs[slot].instrument_idx = -1
                memset(&self.order_aux[slot], 0, sizeof(OrderAux))
                if from_free:
                    self.order_ids[slot] = ""
                    self.client_ids[slot] = ""
                    self.free_slots[self.n_free] = slot
                    self.n_free += 1
                else:
                    # Appended: undone newest first, so it is the last slot.
                    self.order_ids.pop()
                    self.client_ids.pop()
                    self.n_orders -= 1
            elif kind == 2:
                memcpy(&self.position_recs[<Py_ssize_t>entry[1]], PyBytes_AS_STRING(entry[2]), sizeof(PositionRec))
            elif kind == 3:
                if entry[2] is None:
                    self.position_ids.pop(entry[1], None)
                else:
                    self.position_ids[entry[1]] = entry[2]
            elif kind == 4:
                memcpy(&self.balance_recs[<Py_ssize_t>entry[1]], PyBytes_AS_STRING(entry[2]), sizeof(BalanceRec))
            else:
                del self.asset_slots[self.assets.pop()]
                self.n_assets -= 1
        self.fill_count, self.n_live, self.n_closed, self.close_counter = self.batch_counters
        return 0

    cdef Order _order_obj(self, Py_ssize_t slot):
        cdef OrderRec* o = &self.order_recs[slot]
        inst = self.instruments[o.instrument_idx]
        return Order.from_rec(o, self.order_ids[slot], self.client_ids[slot], inst, inst.symbol)

    cdef Py_ssize_t _slot_of(self, object order_id) except -2:
        slot = self.order_slots.get(order_id)
        if slot is None:
            self._fail(OrderInputError(f"unknown order id {order_id!r}"))
            return -1
        return <Py_ssize_t>slot

    # ------------------------------------------------------------------ instruments

    def add_instrument(self, Instrument instrument):
        """Register an instrument (its netting position starts CREATED, flat). Returns its
        slot; adding the same symbol again returns the existing slot. O(1) amortized."""
        cdef Py_ssize_t slot
        cdef PositionRec* grown
        existing = self.instrument_slots.get(instrument.symbol)
        if existing is not None:
            return existing
        if self.n_instruments == self.cap_instruments:
            grown = <PositionRec*>PyMem_Realloc(self.position_recs, (self.cap_instruments * 2 + 4) * sizeof(PositionRec))
            if grown == NULL:
                raise MemoryError()
            self.position_recs = grown
            self.cap_instruments = self.cap_instruments * 2 + 4
        slot = self.n_instruments
        position_init(&self.position_recs[slot])
        self.position_recs[slot].instrument_idx = <int32_t>slot
        self.instruments.append(instrument)
        self.instrument_slots[instrument.symbol] = slot
        self.n_instruments += 1
        return slot

    cdef Py_ssize_t _instrument_slot(self, object symbol) except -1:
        slot = self.instrument_slots.get(symbol)
        if slot is None:
            raise OrderInputError(f"unknown instrument {symbol!r}: call add_instrument first")
        return <Py_ssize_t>slot

    # ------------------------------------------------------------------ orders

    def add_order(self, str order_id, str symbol, int side, int64_t qty_lots, int64_t price_ticks=0, *,
                  int order_type=OT_LIMIT, int64_t stop_price_ticks=0, int status=OS_PENDING_NEW,
                  str client_id="", int64_t ts_ns=0):
        """Start tracking an order (status PENDING_NEW unless the venue already
        acknowledged it: NEW, PENDING_CANCEL, PENDING_REPLACE). Returns its slot.
        ``OrderInputError`` for a known id, unknown instrument or bad values. O(1) amortized."""
        cdef Py_ssize_t islot = self._instrument_slot(symbol)
        cdef OrderRec* grown
        if order_id in self.order_slots:
            raise OrderInputError(f"order id {order_id!r} is already tracked")
        order_validate_new(order_id, side, order_type, status, qty_lots, price_ticks, stop_price_ticks)
        cdef OrderRec rec
        order_init(&rec, side, order_type, qty_lots, price_ticks, stop_price_ticks, status, ts_ns)
        rec.instrument_idx = <int32_t>islot
        cdef Py_ssize_t slot = self._add_rec(order_id, client_id, &rec)
        self._notify_order(slot)
        return slot

    cdef Py_ssize_t _add_rec(self, str order_id, str client_id, const OrderRec* rec) except -1:
        # A freed slot first (retention keeps the arrays flat), else a new one at the end.
        cdef Py_ssize_t slot, cap
        cdef bint from_free = self.n_free > 0
        cdef void* grown
        if from_free:
            self.n_free -= 1
            slot = self.free_slots[self.n_free]
            self.order_ids[slot] = order_id
            self.client_ids[slot] = client_id
        else:
            if self.n_orders == self.cap_orders:
                # Three arrays grow together; each is reassigned as soon as it moved, so
                # a MemoryError part way leaves them valid (some merely larger).
                cap = self.cap_orders * 2 + 64
                grown = PyMem_Realloc(self.order_recs, cap * sizeof(OrderRec))
                if grown == NULL:
                    raise MemoryError()
                self.order_recs = <OrderRec*>grown
                grown = PyMem_Realloc(self.order_aux, cap * sizeof(OrderAux))
                if grown == NULL:
                    raise MemoryError()
                self.order_aux = <OrderAux*>grown
                grown = PyMem_Realloc(self.free_slots, cap * sizeof(Py_ssize_t))
                if grown == NULL:
                    raise MemoryError()
                self.free_slots = <Py_ssize_t*>grown
                self.cap_orders = cap
            slot = self.n_orders
            self.order_ids.append(order_id)
            self.client_ids.append(client_id)
            self.n_orders += 1
        if self.in_batch:
            self._first_touch(0, slot)      # a rollback frees it: no copy of the record needed
            self.undo_log.append((1, slot, from_free, client_id, self.client_slots.get(client_id)))
        self.order_recs[slot] = rec[0]
        memset(&self.order_aux[slot], 0, sizeof(OrderAux))
        self.order_slots[order_id] = slot
        if client_id:
            self.client_slots[client_id] = slot
        self.n_live += 1
        self._mark_closed(slot)
        return slot

    cdef void _mark_closed(self, Py_ssize_t slot) noexcept:
        # Called after every write to an order: closed is terminal, so each order gets
        # its closing sequence number once.
        if self.order_aux[slot].closed_seq == 0 and order_is_closed(self.order_recs[slot].status):
            self.close_counter += 1
            self.order_aux[slot].closed_seq = self.close_counter
            self.n_closed += 1

    cdef int _prune_point(self) except -1:
        # End of an order-changing call: forget the oldest closed orders when due.
        if self.n_closed > self.prune_at and self.callback_depth == 0 and not self.in_batch:
            self._free_closed(self.close_counter - self.max_closed_orders)
        return 0

    cdef int _prune_position_ids(self) except -1:
        # Venue position ids grow by one per round trip: keep each instrument's newest
        # id (the last inserted) and the newest max_closed_orders others; an update
        # naming a forgotten id is refused as unknown. Same conditions as the order
        # prune; O(ids) per prune, amortized O(1).
        if (self.max_closed_orders < 0 or len(self.position_ids) <= self.prune_at + self.n_instruments
                or self.callback_depth or self.in_batch):
            return 0
        newest = {}
        for pid, islot in self.position_ids.items():
            newest[islot] = pid
        keep = set(newest.values())
        excess = len(self.position_ids) - len(keep) - self.max_closed_orders
        for pid in list(self.position_ids):         # oldest first
            if excess <= 0:
                break
            if pid not in keep:
                del self.position_ids[pid]
                excess -= 1
        return 0

    @property
    def position_id_count(self) -> int:
        """Venue position ids remembered (see the retention policy)."""
        return len(self.position_ids)

    cdef Py_ssize_t _free_closed(self, int64_t cutoff) except -1:
        # Forget every closed order with closed_seq <= cutoff; their slots become free.
        cdef Py_ssize_t i, freed = 0
        cdef int64_t seq
        for i in range(self.n_orders):
            seq = self.order_aux[i].closed_seq
            if seq == 0 or seq > cutoff:
                continue
            del self.order_slots[self.order_ids[i]]
            cid = self.client_ids[i]
            if cid and self.client_slots.get(cid) == i:
                del self.client_slots[cid]
            self.order_ids[i] = ""
            self.client_ids[i] = ""
            self.order_recs[i].instrument_idx = -1
            memset(&self.order_aux[i], 0, sizeof(OrderAux))
            self.free_slots[self.n_free] = i
            self.n_free += 1
            freed += 1
        self.n_live -= freed
        self.n_closed -= freed
        self.pruned_count += <uint64_t>freed
        return freed

    def order_slot(self, str order_id):
        """The slot of a venue order id (for ``apply_fill_slot``). O(1)."""
        slot = index_lookup(self.order_slots, order_id, "order id")
        return slot

    def apply_fill(self, str order_id, int64_t trade_id, int64_t price_ticks, int64_t qty_lots,
                   int64_t fee=0, int64_t ts_ns=0):
        """Apply a trade to its order and to the instrument's position, whole or not at
        all. ``trade_id`` (non-zero) is checked against the last 16 of the order and of
        the position; ``fee`` in quote units. Returns True (False in feed mode when
        refused). O(1): one dict lookup, then typed memory only."""
        slot = self.order_slots.get(order_id)
        if slot is None:
            self._fail(OrderInputError(f"unknown order id {order_id!r}"))
            return False
        return self.fill_slot(<Py_ssize_t>slot, trade_id, price_ticks, qty_lots, fee, ts_ns) == 1

    def apply_fill_slot(self, Py_ssize_t slot, int64_t trade_id, int64_t price_ticks, int64_t qty_lots,
                        int64_t fee=0, int64_t ts_ns=0):
        """``apply_fill`` by slot (see ``order_slot``), skipping the id lookup. A slot
        is reused once its closed order was forgotten (retention): hold slots of open
        orders only. O(1)."""
        if not (0 <= slot < self.n_orders) or self.order_recs[slot].instrument_idx < 0:
            raise OrderInputError(f"order slot {slot} is not in use (slots 0..{self.n_orders - 1})")
        return self.fill_slot(slot, trade_id, price_ticks, qty_lots, fee, ts_ns) == 1

    cdef int fill_slot(self, Py_ssize_t slot, int64_t trade_id, int64_t price_ticks, int64_t qty_lots,
                       int64_t fee, int64_t ts_ns) except -1:
        """C entry for decoders: 1 applied, 0 refused in feed mode (raises otherwise).
        ``slot`` must be in use (0 <= slot < n_orders, not free)."""
        cdef OrderRec* o = &self.order_recs[slot]
        cdef int64_t cost = 0
        cdef Py_ssize_t islot
        if o.instrument_idx < 0:
            self._fail(OrderInputError(f"order slot {slot} is free (its order was forgotten)"))
            return 0
        cdef OrderResult r = order_check_fill(o, price_ticks, qty_lots, trade_id, &cost)
        if r != OR_OK:
            self._fail(order_error(r, self.order_ids[slot], o.status, OE_FILL,
                                   f"qty_lots={qty_lots} price_ticks={price_ticks} trade_id={trade_id} "
                                   f"filled {o.filled_lots}/{o.qty_lots}"))
            return 0
        # The position applies atomically or not at all; only then is the order committed,
        # which cannot fail after order_check_fill.
        cdef PositionRec* p = &self.position_recs[o.instrument_idx]
        if self.in_batch:
            self._save_order(slot)
            self._save_position(o.instrument_idx)
        r = position_apply_fill(p, o.side, price_ticks, qty_lots, fee, trade_id, ts_ns)
        if r != OR_OK:
            self._fail(position_error(r, self.instruments[o.instrument_idx].symbol, p.status,
                                      f"fill of order {self.order_ids[slot]!r} trade_id={trade_id}"))
            return 0
        # This fill is in the position at its exact price: the folded figures advance too.
        self.order_aux[slot].folded_lots += qty_lots
        self.order_aux[slot].folded_cost += cost - o.cost
        order_commit_fill(o, qty_lots, trade_id, cost, ts_ns)
        self._mark_closed(slot)
        self.fill_count += 1
        if self.on_order_cb is not None or self.on_position_cb is not None or self.in_batch:
            islot = o.instrument_idx    # read before user code runs: `o` may dangle after
            self._notify_order(slot)
            self._notify_position(islot)
        if self.n_closed > self.prune_at:
            self._prune_point()
        return 1

    def apply_order_event(self, str order_id, int event, int64_t ts_ns=0, int64_t seq=0):
        """Apply one event of the order table (engine.OrderEvent other than FILL).
        True when the status changed; False for a repeat, a stale update, or a refusal
        in feed mode. O(1)."""
        cdef Py_ssize_t slot = self._slot_of(order_id)
        if slot < 0:
            return False
        if event == OE_FILL or not (0 <= event < OE_COUNT):
            self._fail(OrderInputError(f"order {order_id!r}: event {event} is not a status event"))
            return False
        if self.in_batch:
            self._save_order(slot)
        cdef OrderRec* o = &self.order_recs[slot]
        cdef int before = o.status
        cdef OrderResult r = order_apply_event(o, event, ts_ns, seq)
        if r >= OR_ERROR:
            self._fail(order_error(r, order_id, before, event, None))
            return False
        if r == OR_STALE:
            self.stale_count += 1
        if r != OR_OK:
            return False
        self._mark_closed(slot)
        self._notify_order(slot)
        self._prune_point()
        return True

    def apply_order_snapshot(self, str order_id, int status, int64_t qty_lots, int64_t filled_lots,
                             int64_t price_ticks, int64_t stop_price_ticks=0, int64_t cost=-1,
                             int64_t ts_ns=0, int64_t seq=0, bint fold_fills=False):
        """Apply a full order object (absolute quantities, stated status): amend, fill
        and status change together or not at all. ``cost`` is the venue's cumulative
        cost in quote units (-1: not sent); a cost below the order's is refused.

        ``fold_fills``: the filled lots are also folded into the position. The account
        remembers per order the lots and cost already folded; an object with a cost
        folds (filled_lots - folded lots) at (cost - folded cost). Without a cost the
        new lots wait (``Order.filled_lots`` moves, the position not yet) until an
        object with a cost folds them all; an object that would close the order while
        lots wait is refused (a closed order takes no later cost, so they would be
        lost), as is a cost that changes with no newly filled lots. True when
        anything changed. O(1)."""
        cdef Py_ssize_t slot = self._slot_of(order_id)
        if slot < 0:
            return False
        if not (0 <= status < OS_COUNT):
            self._fail(OrderInputError(f"order {order_id!r}: unknown order status {status}"))
            return False
        return self._snapshot(slot, status, qty_lots, filled_lots, price_ticks, stop_price_ticks, cost,
                              ts_ns, seq, fold_fills) == 1

    cdef int _snapshot(self, Py_ssize_t slot, int status, int64_t qty_lots, int64_t filled_lots,
                       int64_t price_ticks, int64_t stop_price_ticks, int64_t cost, int64_t ts_ns,
                       int64_t seq, bint fold_fills) except -1:
        cdef OrderRec tmp = self.order_recs[slot]
        cdef OrderRec* o = &self.order_recs[slot]
        cdef OrderAux aux = self.order_aux[slot]
        cdef PositionRec ptmp
        cdef Py_ssize_t islot = o.instrument_idx
        cdef int event = 0
        cdef int64_t fold_lots = 0, fold_cost = 0
        cdef OrderResult r = order_apply_snapshot(&tmp, <uint8_t>status,
                                                  qty_lots, filled_lots, price_ticks, stop_price_ticks,
                                                  cost, ts_ns, seq, &event)
        if r >= OR_ERROR:
            self._fail(order_error(r, self.order_ids[slot], o.status, event,
                                   f"stated {order_status_name(status)} qty_lots={qty_lots} filled_lots={filled_lots}"))
            return 0
        if r == OR_STALE:
            self.stale_count += 1
        if r != OR_OK:
            return 0
        try:
            if cost >= 0 and cost < o.cost:
                raise OrderInputError(f"order {self.order_ids[slot]!r}: cost went down from {o.cost} to {cost}")
            if fold_fills:
                self._fold_plan(self.order_ids[slot], &tmp, cost, &aux, &fold_lots, &fold_cost)
        except OrderInputError as exc:
            self._fail(exc)
            return 0
        if fold_lots:
            ptmp = self.position_recs[islot]
            r = position_apply_fill_notional(&ptmp, o.side, fold_lots, <i128>fold_cost, -1, 0, 0, ts_ns)
            if r != OR_OK:
                self._fail(position_error(r, self.instruments[islot].symbol, ptmp.status,
                                          f"fill of order {self.order_ids[slot]!r} ({fold_lots} lots, "
                                          f"cost {fold_cost})"))
                return 0
        if self.in_batch:
            self._save_order(slot)
            if fold_lots:
                self._save_position(islot)
        if fold_lots:
            self.position_recs[islot] = ptmp
            self.fill_count += 1
        o[0] = tmp
        self.order_aux[slot] = aux
        self._mark_closed(slot)
        # `o` may dangle once a callback has run (it can add orders: realloc).
        self._notify_order(slot)
        if fold_lots:
            self._notify_position(islot)
        self._prune_point()
        return 1

    cdef int _fold_plan(self, str order_id, const OrderRec* after, int64_t cost, OrderAux* aux,
                        int64_t* lots_out, int64_t* cost_out) except -1:
        # Fold-mode bookkeeping for one full order object already applied to `after`
        # (a copy): the lots and cost to fold now; advances *aux. OrderInputError when
        # the object would lose or invent lots; nothing else changes.
        lots_out[0] = 0
        cost_out[0] = 0
        if cost >= 0:
            if cost < aux.folded_cost:
                raise OrderInputError(f"order {order_id!r}: cost {cost} is below the {aux.folded_cost} "
                                      "already in the position")
            if after.filled_lots == aux.folded_lots:
                if cost != aux.folded_cost:
                    raise OrderInputError(f"order {order_id!r}: cost changed from {aux.folded_cost} to {cost} "
                                          f"with no newly filled lots (filled {after.filled_lots})")
                return 0
            lots_out[0] = after.filled_lots - aux.folded_lots
            cost_out[0] = cost - aux.folded_cost
            aux.folded_lots = after.filled_lots
            aux.folded_cost = cost
        elif order_is_closed(after.status) and after.filled_lots > aux.folded_lots:
            raise OrderInputError(f"order {order_id!r}: closes as {order_status_name(after.status)} with "
                                  f"{after.filled_lots - aux.folded_lots} filled lots whose cost was never "
                                  "sent; a closed order takes no later cost, so they would be lost")
        return 0

    def has_order(self, str order_id):
        """True when the order id is tracked (open, or closed and not yet forgotten by
        the retention policy). Adapters should ask this instead of keeping a shadow set
        of ids, which would grow without bound. O(1)."""
        return order_id in self.order_slots

    def order(self, str order_id):
        """A snapshot copy of one order (``engine.Order``). O(1)."""
        slot = index_lookup(self.order_slots, order_id, "order id")
        return self._order_obj(<Py_ssize_t>slot)

    def order_by_client_id(self, str client_id):
        """A snapshot copy of the order with this client id. O(1)."""
        slot = index_lookup(self.client_slots, client_id, "client order id")
        return self._order_obj(<Py_ssize_t>slot)

    def order_ids_by_slot(self):
        """Venue order ids indexed by slot (a copy; "" for a free slot), to label
        ``orders()`` rows."""
        return list(self.order_ids)

    def orders(self, bint open_only=False):
        """All tracked orders (or the open ones) as a numpy array of ``ORDER_DTYPE`` (a
        copy, in slot order; ``slot`` indexes ``order_ids_by_slot()``). O(slots)."""
        cdef Py_ssize_t i, k = 0, n = 0
        for i in range(self.n_orders):
            if self.order_recs[i].instrument_idx >= 0 and (not open_only or not order_is_closed(self.order_recs[i].status)):
                n += 1
        out = np.zeros(n, dtype=ORDER_DTYPE)
        cdef OrderRow* rows = <OrderRow*><size_t>out.ctypes.data
        cdef OrderRec* o
        for i in range(self.n_orders):
            o = &self.order_recs[i]
            if o.instrument_idx < 0 or (open_only and order_is_closed(o.status)):
                continue
            rows[k].price_ticks = o.price_ticks
            rows[k].stop_price_ticks = o.stop_price_ticks
            rows[k].qty_lots = o.qty_lots
            rows[k].filled_lots = o.filled_lots
            rows[k].cost = o.cost
            rows[k].created_ns = o.created_ns
            rows[k].updated_ns = o.updated_ns
            rows[k].seq = o.seq
            rows[k].slot = <int32_t>i
            rows[k].instrument_idx = o.instrument_idx
            rows[k].side = o.side
            rows[k].order_type = o.order_type
            rows[k].status = o.status
            k += 1
        return out

    def remove_closed_orders(self):
        """Forget every closed order now (their ids become unknown; their slots are
        reused by later orders; open orders keep their slots). Refused
        (``EngineError``) inside a callback or a batch, where the caller may hold
        slots. Returns how many were removed. O(slots)."""
        if self.callback_depth:
            raise EngineError("remove_closed_orders cannot run inside an account callback")
        if self.in_batch:
            raise EngineError("remove_closed_orders cannot run inside a batch")
        return self._free_closed(self.close_counter)

    @property
    def order_capacity(self) -> int:
        """Order slots allocated (tracked orders plus free and spare slots)."""
        return self.cap_orders

    @property
    def closed_order_count(self) -> int:
        """Closed orders still tracked (see the retention policy)."""
        return self.n_closed

    # ------------------------------------------------------------------ positions

    def position(self, str symbol):
        """A snapshot copy of the instrument's netting position (``engine.Position``). O(1)."""
        cdef Py_ssize_t islot = self._instrument_slot(symbol)
        return Position.from_rec(&self.position_recs[islot], self.instruments[islot], symbol)

    def positions(self):
        """Snapshot copies of every instrument's position, in instrument-slot order. O(n)."""
        cdef Py_ssize_t i
        return [Position.from_rec(&self.position_recs[i], self.instruments[i], self.instruments[i].symbol)
                for i in range(self.n_instruments)]

    def set_position_status(self, str symbol, int status, int64_t ts_ns=0):
        """Apply a venue-stated position status. True when it changed. O(1)."""
        cdef Py_ssize_t islot = self._instrument_slot(symbol)
        cdef int before = self.position_recs[islot].status
        if self.in_batch:
            self._save_position(islot)
        cdef OrderResult r = position_set_status(&self.position_recs[islot], status, ts_ns)
        if r >= OR_ERROR:
            self._fail(position_error(r, symbol, before, f"to {position_status_name(status)}"))
            return False
        if r != OR_OK:
            return False
        self._notify_position(islot)
        return True

    # ------------------------------------------------------------------ balances

    def set_asset_decimals(self, str asset, int decimals):
        """Fraction digits used for this asset's balances sent as decimal strings
        (default 8). Existing balances keep their scale until the next update."""
        if not (0 <= decimals <= 18):
            raise OrderInputError(f"asset {asset!r}: decimals must be 0..18, got {decimals}")
        self.asset_decimals[asset] = decimals

    def set_balance(self, str asset, int64_t total, int64_t available, int64_t reserved, int decimals=8,
                    int64_t ts_ns=0):
        """Set an asset balance from exact integers at ``decimals`` fraction digits.
        Refuses negative figures. False when nothing changed. O(1)."""
        if total < 0 or available < 0 or reserved < 0 or not (0 <= decimals <= 18):
            self._fail(OrderInputError(f"balance {asset!r}: bad figures total={total} available={available} "
                                       f"reserved={reserved} decimals={decimals}"))
            return False
        cdef Py_ssize_t slot = self._asset_slot(asset)
        if not self._write_balance(slot, total, available, reserved, decimals, ts_ns):
            return False
        self._notify_balance(slot)
        return True

    cdef int _write_balance(self, Py_ssize_t slot, int64_t total, int64_t available, int64_t reserved,
                            int decimals, int64_t ts_ns) except -1:
        # Validated figures in; 1 when the record changed, 0 unchanged or stale. No callback.
        cdef BalanceRec* b = &self.balance_recs[slot]
        if ts_ns != 0 and ts_ns < b.updated_ns:
            self.stale_count += 1
            return 0
        if b.total == total and b.available == available and b.reserved == reserved and b.decimals == decimals:
            return 0
        if self.in_batch:
            self._save_balance(slot)
        b.total = total
        b.available = available
        b.reserved = reserved
        b.decimals = decimals
        if ts_ns > b.updated_ns:
            b.updated_ns = ts_ns
        return 1

    cdef Py_ssize_t _asset_slot(self, str asset) except -1:
        cdef BalanceRec* grown
        slot = self.asset_slots.get(asset)
        if slot is not None:
            return <Py_ssize_t>slot
        if self.n_assets == self.cap_assets:
            grown = <BalanceRec*>PyMem_Realloc(self.balance_recs, (self.cap_assets * 2 + 8) * sizeof(BalanceRec))
            if grown == NULL:
                raise MemoryError()
            self.balance_recs = grown
            self.cap_assets = self.cap_assets * 2 + 8
        memset(&self.balance_recs[self.n_assets], 0, sizeof(BalanceRec))
        self.balance_recs[self.n_assets].decimals = self.asset_decimals.get(asset, 8)
        self.asset_slots[asset] = self.n_assets
        self.assets.append(asset)
        if self.in_batch:
            self.undo_log.append((5, asset))
        self.n_assets += 1
        return self.n_assets - 1

    cdef object _balance_obj(self, Py_ssize_t slot):
        cdef BalanceRec* b = &self.balance_recs[slot]
        return Balance(b.total, b.available, b.reserved, b.decimals, b.updated_ns)

    def balance(self, str asset):
        """One asset's ``Balance`` (total, available, reserved, decimals, updated_ns). O(1)."""
        slot = index_lookup(self.asset_slots, asset, "asset")
        return self._balance_obj(<Py_ssize_t>slot)

    def balances(self):
        """Every asset's ``Balance`` as a dict (a copy). O(n)."""
        cdef Py_ssize_t i
        return {self.assets[i]: self._balance_obj(i) for i in range(self.n_assets)}

    # ------------------------------------------------------------------ invariants

    def _check_invariants(self):
        """Raise AssertionError when any record breaks an invariant (tests only). O(n)."""
        cdef Py_ssize_t i, closed = 0
        cdef OrderAux* aux
        if len(self.order_ids) != self.n_orders or len(self.order_slots) != self.n_live:
            raise AssertionError("order index out of step with the order array")
        if self.n_live + self.n_free != self.n_orders or len(set(self.free_slots[i] for i in range(self.n_free))) != self.n_free:
            raise AssertionError("free slots out of step")
        for i in range(self.n_orders):
            aux = &self.order_aux[i]
            if self.order_recs[i].instrument_idx < 0:
                if self.order_ids[i] != "" or aux.closed_seq or aux.folded_lots or aux.folded_cost:
                    raise AssertionError(f"free slot {i} still holds an order")
                continue
            self._order_obj(i)._check_invariants()
            if self.order_slots[self.order_ids[i]] != i:
                raise AssertionError(f"order {self.order_ids[i]!r} indexed at the wrong slot")
            if (aux.closed_seq != 0) != order_is_closed(self.order_recs[i].status) or aux.closed_seq > self.close_counter:
                raise AssertionError(f"order {self.order_ids[i]!r}: closing sequence out of step")
            if not (0 <= aux.folded_lots <= self.order_recs[i].filled_lots):
                raise AssertionError(f"order {self.order_ids[i]!r}: folded lots {aux.folded_lots} out of range")
            closed += aux.closed_seq != 0
        if closed != self.n_closed:
            raise AssertionError(f"{closed} closed orders, counted {self.n_closed}")
        for i in range(self.n_instruments):
            Position.from_rec(&self.position_recs[i], self.instruments[i], self.instruments[i].symbol)._check_invariants()

    @property
    def order_count(self) -> int:
        """Orders tracked (open and closed)."""
        return self.n_live

    # ------------------------------------------------------------------ venue event shapes
    #
    # Plain methods taking already-decoded fields; the feed adapters call them. Each
    # applies whole or not at all (a frame with several items is validated first).

    def on_position_create(self, str position_id, str symbol, object status, object qty="0",
                           object entry_price=None, object side=None, object realized_pnl=None,
                           int64_t ts_ns=0):
        """Bot platform ``PositionCreate``: a new venue position on ``symbol`` (netting:
        the instrument's position must be flat: CREATED, COMPLETED or FAILED; it
        starts a new round trip, keeping the lifetime realized PnL and fees unless
        ``realized_pnl`` is given). ``qty``/``entry_price``/``realized_pnl`` are decimal
        strings (``qty`` signed, or unsigned with ``side`` "Long"/"Short"/"Buy"/"Sell");
        the entry notional entry_price / tick_size * qty_lots must be a whole number
        of quote units (``DecimalError`` otherwise). True when applied."""
        return self._venue_position(True, position_id, symbol, status, qty, entry_price, side,
                                    realized_pnl, ts_ns)

    def on_position_update(self, str position_id, str symbol, object status, object qty="0",
                           object entry_price=None, object side=None, object realized_pnl=None,
                           int64_t ts_ns=0):
        """Bot platform ``PositionUpdate``: the venue's full position object replaces
        quantity, entry and (when given) realized PnL; the status moves by the table.
        Same fields as ``on_position_create``. True when anything changed."""
        return self._venue_position(False, position_id, symbol, status, qty, entry_price, side,
                                    realized_pnl, ts_ns)

    cdef object _venue_position(self, bint create, str position_id, str symbol, object status, object qty,
                                object entry_price, object side, object realized_pnl, int64_t ts_ns):
        cdef Py_ssize_t islot
        cdef PositionRec tmp
        cdef PositionRec* p
        cdef int64_t qty_lots
        cdef i128 notional = 0, realized = 0
        cdef int code
        cdef OrderResult r
        try:
            islot = self._instrument_slot(symbol)
            inst = <Instrument>self.instruments[islot]
            code = parse_position_status(status)
            qty_lots = lots_field(inst, qty, "position qty")
            if side is not None:
                if qty_lots < 0:
                    raise OrderInputError(f"position {position_id!r}: signed qty {qty!r} given with side {side!r}")
                if parse_side(side) == SIDE_ASK:
                    qty_lots = -qty_lots
            if qty_lots != 0:
                if entry_price is None:
                    raise OrderInputError(f"position {position_id!r}: entry_price missing for qty {qty!r}")
                i128_from_py(entry_notional(inst, entry_price, qty_lots), &notional)
            if realized_pnl is not None:
                i128_from_py(quote_units_any(inst, realized_pnl, "realized_pnl"), &realized)
            if not create and self.position_ids.get(position_id) != islot:
                raise OrderInputError(f"unknown position id {position_id!r} on {symbol}")
        except (OrderInputError, DecimalError, OverflowError) as exc:
            self._fail(exc)
            return False
        p = &self.position_recs[islot]
        tmp = p[0]
        if create:
            if position_id in self.position_ids:
                self._fail(InvalidTransition(f"position {position_id!r} on {symbol} already created"))
                return False
            if not (tmp.status == PS_COMPLETED or tmp.status == PS_FAILED or
                    (tmp.status == PS_CREATED and tmp.qty_lots == 0)):
                self._fail(InvalidTransition(f"position {position_id!r} on {symbol}: the netting position is "
                                             f"{position_status_name(tmp.status)}, not flat"))
                return False
            position_init(&tmp)
            tmp.instrument_idx = <int32_t>islot
            tmp.realized_pnl = p.realized_pnl
            tmp.fees = p.fees
        elif ts_ns != 0 and ts_ns < p.updated_ns:
            self.stale_count += 1
            return False
        r = position_set_status(&tmp, code, ts_ns)
        if r >= OR_ERROR:
            self._fail(position_error(r, symbol, p.status, f"to {position_status_name(code)} "
                                                           f"(venue position {position_id!r}, {status!r})"))
            return False
        tmp.qty_lots = qty_lots
        tmp.entry_notional = notional
        if realized_pnl is not None:
            tmp.realized_pnl = realized
        if ts_ns > tmp.updated_ns:
            tmp.updated_ns = ts_ns
        if not create and r == OR_UNCHANGED and tmp.qty_lots == p.qty_lots and \
                tmp.entry_notional == p.entry_notional and tmp.realized_pnl == p.realized_pnl:
            return False
        if self.in_batch:
            self._save_position(islot)
            self._save_position_id(position_id)
        p[0] = tmp
        self.position_ids[position_id] = islot
        self._notify_position(islot)
        self._prune_position_ids()
        return True

    def on_position_order_create(self, str position_id, str order_id, str symbol, object side,
                                 object order_type, object status, object qty, object price=None,
                                 object stop_price=None, object filled_qty="0", str client_id="",
                                 int64_t ts_ns=0, int64_t seq=0):
        """Bot platform ``PositionOrderCreate``: a full order object (decimal strings for
        quantities and prices, venue strings for side/type/status). A repeat of a known
        order id is applied as an update. Fills are not folded into the position: the
        platform sends the position itself (``on_position_update``). True when applied."""
        cdef OrderRec rec
        cdef int event = 0
        cdef OrderResult r
        if order_id in self.order_slots:
            return self.on_position_order_update(order_id, status, qty, price, stop_price, filled_qty,
                                                 ts_ns, seq)
        try:
            islot = self._instrument_slot(symbol)
            inst = <Instrument>self.instruments[islot]
            sd = parse_side(side)
            ot = parse_order_type(order_type)
            st = parse_order_status(status)
            q = lots_field(inst, qty, "order qty")
            f = lots_field(inst, filled_qty, "order filled_qty")
            px = ticks_field(inst, price, "order price")
            stop = ticks_field(inst, stop_price, "order stop_price")
        except (OrderInputError, DecimalError) as exc:
            self._fail(exc)
            return False
        if q <= 0:
            self._fail(OrderInputError(f"order {order_id!r}: qty must be positive, got {qty!r}"))
            return False
        order_init(&rec, sd, ot, q, px, stop, OS_PENDING_NEW, ts_ns)
        rec.instrument_idx = <int32_t>islot
        r = order_apply_snapshot(&rec, <uint8_t>st, q, f, px, stop, -1, ts_ns, seq, &event)
        if r >= OR_ERROR:
            self._fail(order_error(r, order_id, OS_PENDING_NEW, event, f"created as {status!r}"))
            return False
        rec.created_ns = ts_ns
        slot = self._add_rec(order_id, client_id, &rec)
        if self.in_batch:
            self._save_position_id(position_id)
        self.position_ids.setdefault(position_id, islot)
        self._notify_order(slot)
        self._prune_point()
        self._prune_position_ids()
        return True

    def on_position_order_update(self, str order_id, object status, object qty, object price=None,
                                 object stop_price=None, object filled_qty="0", int64_t ts_ns=0,
                                 int64_t seq=0):
        """Bot platform ``PositionOrderUpdate``: the full order object again (absolute
        quantities as decimal strings). Stale (older ``seq``/``ts_ns``) and repeated
        objects are ignored. True when anything changed."""
        cdef Py_ssize_t slot = self._slot_of(order_id)
        if slot < 0:
            return False
        inst = <Instrument>self.instruments[self.order_recs[slot].instrument_idx]
        try:
            st = parse_order_status(status)
            q = lots_field(inst, qty, "order qty")
            f = lots_field(inst, filled_qty, "order filled_qty")
            px = ticks_field(inst, price, "order price")
            stop = ticks_field(inst, stop_price, "order stop_price")
        except (OrderInputError, DecimalError) as exc:
            self._fail(exc)
            return False
        return self._snapshot(slot, st, q, f, px, stop, -1, ts_ns, seq, False) == 1

    def on_nft_energy_update(self, object energy, int64_t ts_ns=0):
        """Bot platform ``NftEnergyUpdate``: ``energy`` is the venue's integer, the value
        being energy / 100,000,000; kept exactly as the balance "NFT_ENERGY" with
        decimals 8 (total = available = energy). True when it changed."""
        if not isinstance(energy, int) or not (0 <= energy < (1 << 63)):
            self._fail(OrderInputError(f"NftEnergyUpdate: energy must be a non-negative int64, got {energy!r}"))
            return False
        return self.set_balance("NFT_ENERGY", energy, energy, 0, 8, ts_ns)

    def on_openorders(self, cancel=(), modify=(), str symbol=None, int64_t ts_ns=0):
        """Stream venue ``openorders``: ``modify`` items are full order objects
        (mappings with ``id``, ``state``, ``resd`` remaining lots, ``exec`` executed
        lots, ``cost`` cumulative quote units (int, or a decimal string in the quote
        currency), and for an unknown id ``side``, optional ``price`` ticks, ``type``,
        ``symbol`` (else the ``symbol`` argument), ``clientId``; optional ``seq``,
        ``ts``); ``cancel`` items name orders (``id``) the venue canceled. Executed
        lots are folded into the position exactly as ``apply_order_snapshot`` with
        ``fold_fills`` does: (exec - lots already folded) at (cost - cost already
        folded) when the item has a cost; without one they wait for a later cost, and
        closing (or canceling) an order while lots wait is refused. A cost that goes
        down or changes with no new lots is refused. The whole frame is validated
        first and applied whole or not at all. Returns the number of orders changed."""
        # Phase 1: plan on copies (Order objects hold a copy of the record).
        plans = {}        # slot or new id -> Order copy
        aux_plans = {}    # slot or new id -> (folded_lots, folded_cost)
        fills = []        # (islot, side, lots, cost)
        cdef Order tmp
        cdef OrderRec rec
        cdef OrderAux aux
        cdef OrderResult r
        cdef int event = 0
        cdef int64_t q, f, px, cost, seq, ts, fold_lots, fold_cost
        try:
            for item in modify:
                oid = item_field(item, "id")
                slot = self.order_slots.get(oid)
                key = slot if slot is not None else oid
                tmp = plans.get(key)
                if tmp is None and slot is not None:
                    tmp = self._order_obj(slot)
                islot = tmp.rec.instrument_idx if tmp is not None else \
                    self._instrument_slot(item.get("symbol", symbol))
                inst = <Instrument>self.instruments[islot]
                st = parse_order_status(item_field(item, "state"))
                f = lots_field(inst, item_field(item, "exec"), "exec")
                q = f + lots_field(inst, item_field(item, "resd"), "resd")
                cost = quote_units_any(inst, item["cost"], "cost") if "cost" in item else -1
                if cost < 0 and "cost" in item:
                    raise OrderInputError(f"order {oid!r}: cost {item['cost']!r} is negative")
                seq = item.get("seq", 0)
                ts = item.get("ts", ts_ns)
                if tmp is None:
                    # A new order: it starts PENDING_NEW with the stated quantity and
                    # the snapshot below moves it to the stated state.
                    px = ticks_field(inst, item.get("price"), "price")
                    order_init(&rec, parse_side(item_field(item, "side")), parse_order_type(item.get("type", "limit")),
                               q, px, 0, OS_PENDING_NEW, ts)
                    rec.instrument_idx = <int32_t>islot
                    tmp = Order.from_rec(&rec, oid, str(item.get("clientId", "")), inst, inst.symbol)
                else:
                    px = ticks_field(inst, item["price"], "price") if "price" in item else tmp.rec.price_ticks
                _planned_aux(self, aux_plans, key, slot, &aux)
                if cost >= 0 and cost < tmp.rec.cost:
                    raise OrderInputError(f"order {oid!r}: cost went down from {tmp.rec.cost} to {cost}")
                r = order_apply_snapshot(&tmp.rec, <uint8_t>st, q, f, px, tmp.rec.stop_price_ticks, cost,
                                         ts, seq, &event)
                if r >= OR_ERROR:
                    raise order_error(r, oid, tmp.rec.status, event, f"openorders modify {dict(item)!r}")
                if r == OR_STALE:
                    self.stale_count += 1
                elif r == OR_OK:
                    self._fold_plan(oid, &tmp.rec, cost, &aux, &fold_lots, &fold_cost)
                    if fold_lots:
                        fills.append((islot, tmp.rec.side, fold_lots, fold_cost))
                plans[key] = tmp
                aux_plans[key] = (aux.folded_lots, aux.folded_cost)
            for item in cancel:
                oid = item_field(item, "id")
                slot = self.order_slots.get(oid)
                key = slot if slot is not None else oid
                if key in plans:
                    tmp = plans[key]
                elif slot is not None:
                    tmp = self._order_obj(slot)
                else:
                    raise OrderInputError(f"openorders cancel: unknown order id {oid!r}")
                r = order_apply_event(&tmp.rec, OE_CANCELED, item.get("ts", ts_ns), item.get("seq", 0))
                if r >= OR_ERROR:
                    raise order_error(r, oid, tmp.rec.status, OE_CANCELED, "openorders cancel")
                if r == OR_STALE:
                    self.stale_count += 1
                elif r == OR_OK:
                    _planned_aux(self, aux_plans, key, slot, &aux)
                    self._fold_plan(oid, &tmp.rec, -1, &aux, &fold_lots, &fold_cost)
                plans[key] = tmp
                if key not in aux_plans:
                    _planned_aux(self, aux_plans, key, slot, &aux)
                    aux_plans[key] = (aux.folded_lots, aux.folded_cost)
            # Positions: fold the fills into copies too.
            pos_plans = {}
            for islot, sd, lots, cost_delta in fills:
                ptmp = pos_plans.get(islot)
                if ptmp is None:
                    ptmp = pos_plans[islot] = Position.from_rec(&self.position_recs[<Py_ssize_t>islot],
                                                                self.instruments[islot], self.instruments[islot].symbol)
                r = position_apply_fill_notional(&(<Position>ptmp).rec, sd, lots, <i128><int64_t>cost_delta,
                                                 -1, 0, 0, ts_ns)
                if r != OR_OK:
                    raise position_error(r, (<Position>ptmp).symbol, (<Position>ptmp).rec.status,
                                         f"openorders fill of {lots} lots (cost {cost_delta})")
        except (OrderInputError, DecimalError, InvalidTransition, KeyError, TypeError, OverflowError) as exc:
            self._fail(exc)
            return 0
        # Phase 2: commit, then notify (slots and instrument slots, never pointers).
        changed = []
        for key, tmp in plans.items():
            aux.folded_lots, aux.folded_cost = aux_plans[key]
            if isinstance(key, str):
                slot = self._add_rec(key, tmp.client_id, &tmp.rec)
            else:
                slot = key
                if memcmp(&self.order_recs[<Py_ssize_t>slot], &tmp.rec, sizeof(OrderRec)) == 0:
                    continue
                if self.in_batch:
                    self._save_order(slot)
                self.order_recs[<Py_ssize_t>slot] = tmp.rec
            aux.closed_seq = self.order_aux[<Py_ssize_t>slot].closed_seq
            self.order_aux[<Py_ssize_t>slot] = aux
            self._mark_closed(slot)
            changed.append(slot)
        for islot, ptmp in pos_plans.items():
            if self.in_batch:
                self._save_position(islot)
            self.position_recs[<Py_ssize_t>islot] = (<Position>ptmp).rec
        self.fill_count += len(fills)
        for slot in changed:
            self._notify_order(slot)
        for islot in pos_plans:
            self._notify_position(islot)
        self._prune_point()
        return len(changed)

    def on_balances(self, items, int64_t ts_ns=0):
        """Stream venue ``positions`` (balances): mappings with ``asset`` and decimal
        strings (or exact ints already at the asset's scale) ``total``, ``available``,
        ``reserved``; one missing figure is derived from the other two. Converted at
        the asset's decimals (``set_asset_decimals``, default 8) exactly; validated
        whole before anything is applied: every figure, given or derived, must be an
        integer in [0, 2**63) (``OrderInputError`` naming the asset and the field
        otherwise) and available + reserved = total. Callbacks run once all are in.
        Returns how many balances changed."""
        planned = []
        cdef Py_ssize_t slot
        try:
            for item in items:
                asset = item_field(item, "asset")
                if not isinstance(asset, str):
                    raise OrderInputError(f"balance asset must be a string, got {asset!r}")
                decimals = self.asset_decimals.get(asset, 8)
                vals = {}
                for name in ("total", "available", "reserved"):
                    if name in item and item[name] is not None:
                        vals[name] = scaled_amount(item[name], decimals, f"{asset} {name}")
                if len(vals) < 2:
                    raise OrderInputError(f"balance {asset!r}: need at least two of total/available/reserved")
                total = vals.get("total", vals.get("available", 0) + vals.get("reserved", 0))
                reserved = vals.get("reserved", total - vals.get("available", 0))
                available = vals.get("available", total - reserved)
                for name, value in (("total", total), ("available", available), ("reserved", reserved)):
                    if not (0 <= value < (1 << 63)):
                        how = "given" if name in vals else "derived from the other two"
                        raise OrderInputError(f"balance {asset!r}: {name} {value} ({how}, scale 10^-{decimals}) "
                                              "is outside [0, 2**63)")
                if available + reserved != total:
                    raise OrderInputError(f"balance {asset!r}: inconsistent total={total} available={available} "
                                          f"reserved={reserved} (scale 10^-{decimals})")
                planned.append((asset, total, available, reserved, decimals))
        except (OrderInputError, DecimalError, KeyError, TypeError) as exc:
            self._fail(exc)
            return 0
        changed = []
        for asset, total, available, reserved, decimals in planned:
            slot = self._asset_slot(asset)
            if self._write_balance(slot, total, available, reserved, decimals, ts_ns):
                changed.append(slot)
        for slot in dict.fromkeys(changed):
            self._notify_balance(slot)
        return len(changed)


cdef int _planned_aux(Account acct, dict aux_plans, object key, object slot, OrderAux* aux) except -1:
    # The folded figures of an order as planned so far in this frame (or as stored).
    planned = aux_plans.get(key)
    if planned is not None:
        aux.folded_lots, aux.folded_cost = planned
    elif slot is not None:
        aux[0] = acct.order_aux[<Py_ssize_t>slot]
    else:
        memset(aux, 0, sizeof(OrderAux))
    return 0


cdef class AccountBatch:
    """Context manager of ``Account.batch()``: ``begin_batch`` on entry; on exit
    ``commit_batch`` (``applied`` tells whether the batch was kept) or, when an
    exception leaves the body, ``abort_batch`` and the exception propagates."""

    cdef Account account
    cdef readonly bint applied

    def __init__(self, Account account not None):
        self.account = account

    def __enter__(self):
        self.account.begin_batch()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.account.abort_batch()
            self.applied = False
            return False
        self.applied = self.account.commit_batch() == 1
        return False
