"""Binance order-book sync: REST snapshot + diff stream -> an exact OrderBook.

The rules (Binance's "how to manage a local order book"):

- diffs that arrive before the snapshot are buffered;
- on the snapshot, diffs with ``u <= lastUpdateId`` are dropped as stale (futures:
  ``u < lastUpdateId``, as Binance documents, so that the diff ending exactly at the
  snapshot bridges it);
- the first applied diff must bridge the snapshot: spot ``U <= lastUpdateId + 1 <= u``,
  futures (USD-M, COIN-M) ``U <= lastUpdateId <= u``;
- every later diff must chain: spot ``U == previous u + 1``, futures
  ``pu == previous u``; a diff with ``u <=`` the last applied ``u`` is stale (duplicate);
- a snapshot no newer than an in-sync book is dropped as stale (``dropped_stale``);
- anything else is a gap: the sync goes ``out_of_sync``, ``gaps`` counts it, the
  ``on_gap(sync, reason)`` callback is called, and nothing is applied (diffs are
  buffered again) until a new snapshot is fed.

A diff that would cross the book under ``CrossPolicy.RAISE`` is rejected by the book,
counted in ``crossed`` and treated like a gap (the book missed an update). Under
``CrossPolicy.ALLOW`` it is applied and ``crossed`` counts the frames after which the
book is crossed.

``bookTicker`` frames double as an integrity check: when a ticker's ``u`` equals the
final ``u`` of an applied diff, the book's best bid/ask price and size right after that
diff must equal the ticker's; ``bbo_checks`` counts those and ``bbo_mismatches`` every
differing value. Tickers often arrive before their diff (spot ``depth@100ms`` batches
100 ms of updates), so up to 64 tickers ahead of the book wait for it.
"""
import logging

from libc.stdint cimport int64_t
from libc.string cimport memcpy, memmove
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Realloc, PyMem_Free

from engine._core.types cimport Level, LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.book cimport OrderBook, CROSS_ALLOW
from feeds.binance_decode cimport (
    BinanceDecoder, DepthHeader, TradeEvent, BookTicker, BK_IGNORED, BK_DEPTH, BK_SNAPSHOT, BK_BOOK_TICKER,
    BK_TRADE, BK_AGG_TRADE, BM_SPOT,
)

from engine.errors import BookCrossedError, BookError, DecodeError

logger = logging.getLogger(__name__)

STATE_NAMES = ("awaiting_snapshot", "bridging", "live", "out_of_sync")

# _process_diff outcomes.
cdef enum:
    DIFF_APPLIED = 0
    DIFF_STALE = 1
    DIFF_GAP = 2


cdef class BinanceBookSync:
    """Keeps an ``OrderBook`` exact from Binance depth snapshots and diffs.

    ``BinanceBookSync(book, market="spot", *, on_gap=None, on_trade=None,
    max_buffered=10_000, check_symbol=True)``; ``market`` is ``"spot"``, ``"usdm"`` or
    ``"coinm"``. Feed every frame of the connection (depth diffs, bookTicker,
    trade/aggTrade, bare or combined-stream) and the REST snapshot body to ``feed``.

    Callbacks run after the state change they report, through one wrapper that logs
    and counts (``callback_errors``) any exception they raise:
    ``on_gap(sync, reason)`` when the book goes out of sync (fetch a new snapshot and
    feed it); ``on_trade(sync, price_ticks, qty_lots, taker_side, trade_id, ts_ns)``.

    Counters: ``frames`` (every frame fed), ``depth_applied``, ``dropped_stale``,
    ``gaps``, ``errors`` (malformed frames and snapshots the book rejects; nothing
    changed), ``bbo_checks``,
    ``bbo_mismatches``, ``crossed``, ``snapshots``, ``buffered``, ``buffer_dropped``,
    ``tickers``, ``trades``, ``ignored``, ``callback_errors``.

    Cost per diff: one decode pass O(frame bytes) + the book's whole-or-nothing apply;
    no allocation in steady state.
    """

    def __cinit__(self):
        self.pending = NULL
        self.pending_levels = NULL

    def __init__(self, OrderBook book not None, str market="spot", *, on_gap=None, on_trade=None,
                 Py_ssize_t max_buffered=10_000, bint check_symbol=True):
        if max_buffered < 1:
            raise ValueError(f"max_buffered {max_buffered}: must be >= 1")
        self.book = book
        self.decoder = BinanceDecoder(book.instrument, market, check_symbol=check_symbol)
        self.futures = self.decoder.market != BM_SPOT
        self.state = SYNC_AWAITING_SNAPSHOT
        self.on_gap = on_gap
        self.on_trade = on_trade
        self.max_buffered = max_buffered
        self.last_gap_reason = None
        self.gap_to_signal = None

    def __dealloc__(self):
        PyMem_Free(self.pending)
        PyMem_Free(self.pending_levels)

    # --- frames ---------------------------------------------------------------

    def feed(self, frame):
        """Process one frame (bytes, bytearray or memoryview; only read during the
        call). Returns its kind (0 ignored, 1 depth, 2 snapshot, 3 bookTicker, 4 trade,
        5 aggTrade). Raises DecodeError (counted in ``errors``; nothing changed) on a
        malformed frame, BookError/BookCrossedError if a snapshot is rejected by the
        book. O(frame bytes) plus the book update."""
        cdef Py_buffer view
        if PyBytes_CheckExact(frame):
            return self.feed_c(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            return self.feed_c(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int feed_c(self, const char* buf, Py_ssize_t n) except -1:
        cdef int kind
        self.frames += 1
        try:
            kind = self.decoder.decode(buf, n)
        except DecodeError:
            self.errors += 1
            raise
        if kind == BK_DEPTH:
            self._on_depth()
        elif kind == BK_BOOK_TICKER:
            self._on_ticker()
        elif kind == BK_TRADE or kind == BK_AGG_TRADE:
            self.trades += 1
            if self.on_trade is not None:
                self._invoke(self.on_trade, (
                    self, self.decoder.trade.price_ticks, self.decoder.trade.qty_lots,
                    self.decoder.trade.taker_side, self.decoder.trade.trade_id,
                    self.decoder.trade.trade_ts_ns))
        elif kind == BK_SNAPSHOT:
            try:
                self._on_snapshot()
            except BookError:
                # Rejected whole by the book (crossed, repeated price): nothing changed.
                self.errors += 1
                raise
        else:
            self.ignored += 1
        if self.gap_to_signal is not None:
            reason = self.gap_to_signal
            self.gap_to_signal = None
            if self.on_gap is not None:
                self._invoke(self.on_gap, (self, reason))
        return kind

    cdef int _on_depth(self) except -1:
        cdef DepthHeader* hdr = &self.decoder.depth
        if self.state == SYNC_AWAITING_SNAPSHOT or self.state == SYNC_OUT_OF_SYNC:
            self._buffer(hdr, self.decoder.levels)
            return 0
        if self._process_diff(hdr, self.decoder.levels) == DIFF_GAP:
            # Keep it: with the next snapshot it may be the bridging diff.
            self._buffer(hdr, self.decoder.levels)
        return 0

    cdef int _process_diff(self, const DepthHeader* hdr, const LevelUpdate* levels) except -1:
        """Check one diff against the book's last applied id; apply it whole, drop it
        as stale, or declare a gap."""
        cdef OrderBook book = self.book
        cdef int64_t last = book.last_update_id
        cdef bint chained
        cdef Level bid, ask
        # Futures bridge on U <= lastUpdateId <= u, so there a diff ending exactly at the
        # snapshot is the bridging one (its absolute sizes re-state the snapshot's).
        if hdr.final_update_id < last or (hdr.final_update_id == last and not (
                self.futures and self.state == SYNC_BRIDGING)):
            self.dropped_stale += 1
            return DIFF_STALE
        if self.state == SYNC_BRIDGING:
            chained = hdr.first_update_id <= (last if self.futures else last + 1)
            if not chained:
                return self._gap(
                    f"first diff U={hdr.first_update_id} u={hdr.final_update_id} does not cover "
                    f"snapshot lastUpdateId={last}{'' if self.futures else ' + 1'}")
        elif self.futures:
            if hdr.prev_final_update_id != last:
                return self._gap(f"diff pu={hdr.prev_final_update_id} != previous u={last}")
        elif hdr.first_update_id != last + 1:
            return self._gap(f"diff U={hdr.first_update_id} != previous u + 1 = {last + 1}")
        try:
            book.apply_updates(levels, hdr.n_levels)
        except BookCrossedError as exc:
            self.crossed += 1
            self._gap(f"diff u={hdr.final_update_id} rejected: {exc}", count=False)
            return DIFF_GAP
        book.last_update_id = hdr.final_update_id
        if hdr.event_ts_ns >= 0:
            book.event_ts_ns = hdr.event_ts_ns
        self.depth_applied += 1
        self.state = SYNC_LIVE
        if self.ticker_count:
            self._match_tickers(hdr.final_update_id)
        if (book.cross_policy == CROSS_ALLOW and book.best_level(SIDE_BID, &bid)
                and book.best_level(SIDE_ASK, &ask) and bid.price_ticks >= ask.price_ticks):
            self.crossed += 1
        return DIFF_APPLIED

    cdef int _gap(self, str reason, bint count=True) except -1:
        self.state = SYNC_OUT_OF_SYNC
        self.ticker_count = 0
        if count:
            self.gaps += 1
        self.last_gap_reason = reason
        self.gap_to_signal = reason
        return DIFF_GAP

    cdef int _on_snapshot(self) except -1:
        cdef DepthHeader* hdr = &self.decoder.depth
        cdef Py_ssize_t i
        cdef PendingDiff* p
        if (self.state == SYNC_LIVE or self.state == SYNC_BRIDGING) and \
                hdr.final_update_id <= self.book.last_update_id:
            # A snapshot no newer than the synced book (a late REST reply): replacing
            # the book would only move it backwards.
            self.dropped_stale += 1
            return 0
        self.book.replace_with(self.decoder.levels, hdr.n_levels)
        self.book.last_update_id = hdr.final_update_id
        self.book.event_ts_ns = hdr.event_ts_ns
        self.snapshots += 1
        self.state = SYNC_BRIDGING
        self.ticker_count = 0
        # Replay what was buffered; stop at the first gap and keep the rest buffered.
        for i in range(self.pending_count):
            p = &self.pending[i]
            if self._process_diff(&p.header, self.pending_levels + p.level_start) == DIFF_GAP:
                self._drop_pending(i)
                return 0
        self.pending_count = 0
        self.pending_levels_count = 0
        return 0

    cdef void _on_ticker(self) noexcept:
        cdef const BookTicker* t = &self.decoder.ticker
        cdef int64_t last = self.book.last_update_id
        self.tickers += 1
        if self.state != SYNC_LIVE and self.state != SYNC_BRIDGING:
            return
        if t.update_id == last:
            self._check_bbo(t)
        elif t.update_id > last:
            if self.ticker_count == SYNC_TICKER_RING:
                # Full: forget the oldest (smallest u, the least likely to be matched).
                memmove(&self.ticker_ring[0], &self.ticker_ring[1], (SYNC_TICKER_RING - 1) * sizeof(BookTicker))
                self.ticker_count -= 1
            self.ticker_ring[self.ticker_count] = t[0]
            self.ticker_count += 1

    cdef void _match_tickers(self, int64_t final_update_id) noexcept:
        """After a diff ending at final_update_id: check the tickers with that u and
        forget every ticker at or below it. O(SYNC_TICKER_RING)."""
        cdef Py_ssize_t i, kept = 0
        for i in range(self.ticker_count):
            if self.ticker_ring[i].update_id == final_update_id:
                self._check_bbo(&self.ticker_ring[i])
            elif self.ticker_ring[i].update_id > final_update_id:
                self.ticker_ring[kept] = self.ticker_ring[i]
                kept += 1
        self.ticker_count = kept

    cdef void _check_bbo(self, const BookTicker* t) noexcept:
        cdef Level bid, ask
        cdef bint has_bid = self.book.best_level(SIDE_BID, &bid)
        cdef bint has_ask = self.book.best_level(SIDE_ASK, &ask)
        self.bbo_checks += 1
        self.bbo_mismatches += (
            (not has_bid or bid.price_ticks != t.bid_price_ticks)
            + (not has_bid or bid.qty_lots != t.bid_qty_lots)
            + (not has_ask or ask.price_ticks != t.ask_price_ticks)
            + (not has_ask or ask.qty_lots != t.ask_qty_lots))

    # --- the pre-snapshot buffer ------------------------------------------------

    cdef int _buffer(self, const DepthHeader* hdr, const LevelUpdate* levels) except -1:
        cdef Py_ssize_t n = hdr.n_levels
        cdef void* grown
        if self.pending_count >= self.max_buffered:
            self.buffer_dropped += self.pending_count - self.pending_count // 2
            self._drop_pending(self.pending_count - self.pending_count // 2)
        if self.pending_count >= self.pending_capacity:
            grown = PyMem_Realloc(self.pending, <size_t>(2 * self.pending_capacity + 16) * sizeof(PendingDiff))
            if grown == NULL:
                raise MemoryError()
            self.pending = <PendingDiff*>grown
            self.pending_capacity = 2 * self.pending_capacity + 16
        if self.pending_levels_count + n > self.pending_levels_capacity:
            grown = PyMem_Realloc(self.pending_levels, <size_t>(2 * (self.pending_levels_count + n) + 64) * sizeof(LevelUpdate))
            if grown == NULL:
                raise MemoryError()
            self.pending_levels = <LevelUpdate*>grown
            self.pending_levels_capacity = 2 * (self.pending_levels_count + n) + 64
        memcpy(self.pending_levels + self.pending_levels_count, levels, <size_t>n * sizeof(LevelUpdate))
        self.pending[self.pending_count].header = hdr[0]
        self.pending[self.pending_count].level_start = self.pending_levels_count
        self.pending_count += 1
        self.pending_levels_count += n
        self.buffered += 1
        return 0

    cdef void _drop_pending(self, Py_ssize_t k) noexcept:
        """Forget the oldest k buffered diffs (compacting both arrays)."""
        cdef Py_ssize_t i, shift
        if k <= 0:
            return
        if k >= self.pending_count:
            self.pending_count = 0
            self.pending_levels_count = 0
            return
        shift = self.pending[k].level_start
        memmove(self.pending, self.pending + k, <size_t>(self.pending_count - k) * sizeof(PendingDiff))
        self.pending_count -= k
        for i in range(self.pending_count):
            self.pending[i].level_start -= shift
        memmove(self.pending_levels, self.pending_levels + shift,
                <size_t>(self.pending_levels_count - shift) * sizeof(LevelUpdate))
        self.pending_levels_count -= shift

    # --- callbacks ----------------------------------------------------------------

    cdef void _invoke(self, object callback, tuple args) noexcept:
        """The one place user callbacks run: their exceptions are logged with the
        traceback and counted, never propagated into the feed."""
        try:
            callback(*args)
        except Exception:
            self.callback_errors += 1
            logger.exception("binance sync %s: callback %r raised", self.book.instrument.symbol, callback)

    # --- Python API -------------------------------------------------------------------

    @property
    def state_name(self):
        """``"awaiting_snapshot"``, ``"bridging"``, ``"live"`` or ``"out_of_sync"``."""
        return STATE_NAMES[self.state]

    @property
    def in_sync(self):
        """True when the book reflects the venue (a snapshot plus every diff since)."""
        return self.state == SYNC_BRIDGING or self.state == SYNC_LIVE

    @property
    def pending_diffs(self):
        """Diffs buffered now, waiting for a snapshot."""
        return self.pending_count

    @property
    def last_trade(self):
        """The last decoded trade/aggTrade as ``(price_ticks, qty_lots, taker_side,
        trade_id, trade_ts_ns)``, or None before the first one."""
        cdef TradeEvent* t = &self.decoder.trade
        if self.trades == 0:
            return None
        return (t.price_ticks, t.qty_lots, t.taker_side, t.trade_id, t.trade_ts_ns)

    def reset(self):
        """Forget buffered diffs and mark the book out of sync (e.g. after a reconnect);
        the next snapshot resyncs it. No callback is called. O(1)."""
        self.pending_count = 0
        self.pending_levels_count = 0
        self.ticker_count = 0
        self.state = SYNC_OUT_OF_SYNC if self.snapshots else SYNC_AWAITING_SNAPSHOT

    def counters(self):
        """All counters as a dict of ints."""
        return {
            "frames": self.frames, "depth_applied": self.depth_applied,
            "dropped_stale": self.dropped_stale, "gaps": self.gaps, "errors": self.errors,
            "bbo_checks": self.bbo_checks, "bbo_mismatches": self.bbo_mismatches,
            "crossed": self.crossed, "snapshots": self.snapshots, "buffered": self.buffered,
            "buffer_dropped": self.buffer_dropped, "tickers": self.tickers,
            "trades": self.trades, "ignored": self.ignored,
            "callback_errors": self.callback_errors,
        }

    def __repr__(self):
        return (f"BinanceBookSync({self.book.instrument.symbol!r}, state={STATE_NAMES[self.state]!r}, "
                f"last_update_id={self.book.last_update_id}, frames={self.frames}, gaps={self.gaps})")
