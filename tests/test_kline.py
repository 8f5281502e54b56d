"""Unit tests of the kline aggregator: layout, boundaries, fill/skip, late trades,
activity bars, bad input, callbacks, views and venue candles."""
from __future__ import annotations

import datetime as dt
import gc
import logging
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from engine import BAR_DTYPE, Instrument, KlineAggregator, KlineError
from engine.kline import (
    BAR_SIZE,
    FILLED,
    PARTIAL,
    VENUE,
    WEEK_OFFSET_NS,
    bar_notional,
    bar_vwap,
    bars_notional,
    bars_vwap,
    parse_interval,
)

INST = Instrument("BTCUSDT", "0.01", "0.00001")
S = 1_000_000_000
M = 60 * S
H = 60 * M
DAY = 24 * H
T0 = 1_723_161_600 * S  # 2024-08-09 00:00:00 UTC, a Friday


def snapshot(agg: KlineAggregator) -> list[Any]:
    out: list[Any] = [agg.trades_applied]
    for name in agg.intervals:
        cur = agg.current(name)
        out.append((agg.bars(name).tolist(), None if cur is None else cur.tolist(),
                    {k: v for k, v in agg.stats(name).items()}))
    return out


# ---- layout and parsing ----------------------------------------------------------------

def test_dtype_mirrors_struct() -> None:
    assert BAR_DTYPE.itemsize == BAR_SIZE == 112
    assert BAR_DTYPE.names == (
        "open_ts_ns", "close_ts_ns", "open_ticks", "high_ticks", "low_ticks", "close_ticks",
        "volume_lots", "buy_volume_lots", "trade_count", "notional_lo", "notional_hi",
        "first_trade_ts_ns", "last_trade_ts_ns", "flags",
    )
    offsets = [BAR_DTYPE.fields[name][1] for name in BAR_DTYPE.names]  # type: ignore[index]
    assert offsets == list(range(0, 112, 8))
    assert BAR_DTYPE["notional_lo"] == np.dtype("<u8")


@pytest.mark.parametrize(("name", "expected"), [
    ("1s", ("time", S, 0)), ("15s", ("time", 15 * S, 0)), ("1m", ("time", M, 0)),
    ("5m", ("time", 5 * M, 0)), ("4h", ("time", 4 * H, 0)), ("1d", ("time", DAY, 0)),
    ("1w", ("time", 7 * DAY, 4 * DAY)), ("tick:100", ("tick", 100, 0)),
    ("volume:5000", ("volume", 5000, 0)), ("notional:10", ("notional", 10, 0)),
])
def test_parse_interval(name: str, expected: tuple[str, int, int]) -> None:
    assert parse_interval(name) == expected


@pytest.mark.parametrize("name", ["", "0m", "1M", "8d", "2w", "1 m", "m", "tick:0", "tick:-1",
                                  "volume:x", "notional:99999999999999999999", "1ms"])
def test_parse_interval_rejects(name: str) -> None:
    with pytest.raises(KlineError, match="interval"):
        parse_interval(name)


def test_week_offset_is_monday() -> None:
    monday = dt.datetime.fromtimestamp(WEEK_OFFSET_NS / S, tz=dt.timezone.utc)
    assert monday.weekday() == 0 and (monday.hour, monday.minute) == (0, 0)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(KlineError, match="empty"):
        KlineAggregator(INST, ("1m",), empty="zero")
    with pytest.raises(KlineError, match="history"):
        KlineAggregator(INST, ("1m",), history=0)
    with pytest.raises(KlineError, match="duplicate"):
        KlineAggregator(INST, ("1m", "1m"))
    with pytest.raises(KlineError, match="frames"):
        KlineAggregator(INST, ())
    with pytest.raises(KlineError, match="unknown interval"):
        KlineAggregator(INST, ("1m", "fortnight"))
    with pytest.raises(TypeError):
        KlineAggregator(None, ("1m",))  # type: ignore[arg-type]
    with pytest.raises(KlineError, match="callable"):
        KlineAggregator(INST, ("1m",), on_close=5)  # type: ignore[arg-type]


# ---- time bars ------------------------------------------------------------------------

def test_single_trade_bar_and_first_partial_bar() -> None:
    agg = KlineAggregator(INST, ("1m",))
    agg.add_trade(6_183_763, 2_000, T0 + 17 * S + 5, 1)
    cur = agg.current("1m")
    assert cur is not None
    assert (cur["open_ts_ns"], cur["close_ts_ns"]) == (T0, T0 + M)  # aligned, not the trade time
    assert cur["open_ticks"] == cur["high_ticks"] == cur["low_ticks"] == cur["close_ticks"] == 6_183_763
    assert (cur["volume_lots"], cur["buy_volume_lots"], cur["trade_count"]) == (2_000, 2_000, 1)
    assert bar_notional(cur) == 6_183_763 * 2_000 and bar_vwap(cur) == 6_183_763
    assert cur["flags"] == PARTIAL  # trades before the start were never seen
    assert (cur["first_trade_ts_ns"], cur["last_trade_ts_ns"]) == (T0 + 17 * S + 5,) * 2
    agg.add_trade(6_183_700, 1_000, T0 + M + 1, -1)
    second = agg.current("1m")
    assert second is not None and second["flags"] == 0
    assert agg.bars("1m")["flags"].tolist() == [PARTIAL]


def test_trade_exactly_on_boundary_opens_new_bar() -> None:
    agg = KlineAggregator(INST, ("1s", "1m"))
    agg.add_trade(100, 1, T0 + M - 1, 0)
    agg.add_trade(101, 1, T0 + M, 0)
    assert agg.bars("1m")[["open_ts_ns", "close_ticks"]].tolist() == [(T0, 100)]
    cur = agg.current("1m")
    assert cur is not None and (cur["open_ts_ns"], cur["open_ticks"]) == (T0 + M, 101)
    assert agg.bars("1s")["close_ts_ns"].tolist() == [T0 + M]  # exclusive end


def test_equal_timestamps_keep_arrival_order_and_out_of_order_in_open_bar() -> None:
    agg = KlineAggregator(INST, ("1m",))
    t = T0 + 30 * S
    for price in (105, 103, 108, 104):
        agg.add_trade(price, 1, t, 0)
    cur = agg.current("1m")
    assert cur is not None and (cur["open_ticks"], cur["close_ticks"]) == (105, 104)
    # Older than the bar's first trade but inside the open interval: not late; it becomes
    # the open (a bar equals its trades sorted by time), the close stays.
    agg.add_trade(99, 2, t - 10 * S, 1)
    cur = agg.current("1m")
    assert cur is not None
    assert (cur["open_ticks"], cur["low_ticks"], cur["close_ticks"], cur["trade_count"]) == (99, 99, 104, 5)
    assert cur["first_trade_ts_ns"] == t - 10 * S and agg.stats("1m")["late"] == 0


def test_late_trade_is_counted_reported_and_never_applied() -> None:
    late: list[tuple[Any, ...]] = []
    agg = KlineAggregator(INST, ("1m", "1h"), on_late=lambda *a: late.append(a))
    agg.add_trade(100, 1, T0 + 10 * S, 0)
    agg.add_trade(101, 1, T0 + M + 10 * S, 0)
    closed_before = agg.bars("1m").tolist()
    agg.add_trade(50, 7, T0 + 20 * S, -1)  # belongs to the closed 1m bar, the open 1h bar
    assert agg.bars("1m").tolist() == closed_before
    assert late == [("1m", 50, 7, T0 + 20 * S, -1)]
    assert agg.stats("1m")["late"] == 1 and agg.stats("1h")["late"] == 0
    hour = agg.current("1h")
    assert hour is not None and (hour["low_ticks"], hour["trade_count"]) == (50, 3)
    one_min = agg.current("1m")
    assert one_min is not None and one_min["trade_count"] == 1


def test_gap_of_many_intervals_fill_and_skip() -> None:
    fill = KlineAggregator(INST, ("1m",), empty="fill")
    skip = KlineAggregator(INST, ("1m",), empty="skip")
    for agg in (fill, skip):
        agg.add_trade(100, 3, T0 + 5 * S, 1)
        agg.add_trade(102, 1, T0 + 50 * S, 0)
        agg.add_trade(90, 2, T0 + 10 * M + 1, 0)
    bars = fill.bars("1m")
    assert len(bars) == 10 and fill.stats("1m")["closed"] == 10
    flat = bars[1:]
    assert (flat["open_ts_ns"] == T0 + M * np.arange(1, 10)).all()
    assert (flat["open_ticks"] == 102).all() and (flat["close_ticks"] == 102).all()
    assert (flat["high_ticks"] == 102).all() and (flat["low_ticks"] == 102).all()
    assert (flat["volume_lots"] == 0).all() and (flat["trade_count"] == 0).all()
    assert (flat["flags"] == FILLED).all()
    assert skip.bars("1m")["open_ts_ns"].tolist() == [T0]
    assert skip.stats("1m")["closed"] == 1


def test_gap_longer_than_history_keeps_last_bars_and_counts_the_rest() -> None:
    closes: list[int] = []
    agg = KlineAggregator(INST, ("1s",), history=5, on_close=lambda n, b: closes.append(int(b["open_ts_ns"])))
    agg.add_trade(100, 1, T0, 0)
    agg.add_trade(101, 1, T0 + 365 * DAY, 0)  # a year of empty seconds
    bars = agg.bars("1s")
    assert bars["open_ts_ns"].tolist() == [T0 + 365 * DAY - k * S for k in range(5, 0, -1)]
    st = agg.stats("1s")
    assert st["closed"] == 365 * 86400 and st["fill_skipped"] == 365 * 86400 - 6
    assert closes == [T0] + bars["open_ts_ns"].tolist()  # callbacks for the bars kept
    agg._check_invariants()


def test_week_boundary_is_monday_utc() -> None:
    agg = KlineAggregator(INST, ("1w", "1d"))
    sunday_last_ns = 1_723_420_800 * S - 1  # 2024-08-11 23:59:59.999999999 UTC, Sunday
    agg.add_trade(100, 1, sunday_last_ns, 0)
    agg.add_trade(200, 1, sunday_last_ns + 1, 0)  # Monday 00:00:00 UTC
    week = agg.bars("1w")[0]
    start = dt.datetime.fromtimestamp(int(week["open_ts_ns"]) // S, tz=dt.timezone.utc)
    assert start == dt.datetime(2024, 8, 5, tzinfo=dt.timezone.utc) and start.weekday() == 0
    assert week["close_ts_ns"] == sunday_last_ns + 1
    cur = agg.current("1w")
    assert cur is not None and cur["open_ts_ns"] == sunday_last_ns + 1 and cur["open_ticks"] == 200


def test_advance_closes_bars_on_time_and_fills() -> None:
    closed: list[tuple[str, int]] = []
    agg = KlineAggregator(INST, ("1m", "5m", "tick:3"), on_close=lambda n, b: closed.append((n, int(b["open_ts_ns"]))))
    agg.advance(T0 + 30 * S)  # no trades yet: nothing to close or fill, but the clock moves
    assert agg.bars("1m").size == 0 and agg.stats("1m")["period_start_ns"] == T0
    agg.add_trade(100, 1, T0 + 29 * S, 0)  # before the clock but inside the interval: fine
    agg.add_trade(100, 1, T0 - 1, 0)  # before the interval the clock is in: late
    assert agg.stats("1m")["late"] == 1 and agg.stats("tick:3")["late"] == 0
    agg.advance(T0 + M - 1)
    assert closed == []
    agg.advance(T0 + 3 * M)
    assert closed == [("1m", T0), ("1m", T0 + M), ("1m", T0 + 2 * M)]
    assert agg.current("1m") is None and agg.current("5m") is not None
    agg.advance(T0)  # backwards: no change
    assert len(agg.bars("1m")) == 3
    agg.advance(T0 + 5 * M)
    assert [n for n, _ in closed].count("5m") == 1 and len(agg.bars("1m")) == 5
    assert agg.current("tick:3") is not None  # activity frames ignore the clock


# ---- activity bars --------------------------------------------------------------------

def test_tick_volume_notional_bars() -> None:
    agg = KlineAggregator(INST, ("tick:3", "volume:10", "notional:1000"))
    trades = [(100, 4, T0 + 1, 1), (101, 4, T0 + 2, -1), (99, 4, T0 + 3, 0), (100, 1, T0 + 4, 1)]
    for t in trades:
        agg.add_trade(*t)
    ticks = agg.bars("tick:3")
    assert ticks[["open_ts_ns", "close_ts_ns", "open_ticks", "high_ticks", "low_ticks", "close_ticks",
                  "volume_lots", "buy_volume_lots", "trade_count"]].tolist() == [
        (T0 + 1, T0 + 3, 100, 101, 99, 99, 12, 4, 3)]
    assert agg.bars("volume:10")["volume_lots"].tolist() == [12]  # a trade is never split
    # notional: 400, 404 (804), 396 (1200 >= 1000) closes; then 100.
    assert bars_notional(agg.bars("notional:1000")) == [1200]
    cur = agg.current("notional:1000")
    assert cur is not None and bar_notional(cur) == 100
    late: list[Any] = []
    agg.on_late = lambda *a: late.append(a)
    agg.add_trade(100, 1, T0 + 2, 0)  # older than the last closed bar's last trade
    assert {a[0] for a in late} == {"tick:3", "volume:10", "notional:1000"}


def test_vwap_and_wide_notional() -> None:
    agg = KlineAggregator(INST, ("1m",))
    big = 1 << 40
    agg.add_trade(big, big, T0, 1)
    agg.add_trade(big + 1, big, T0 + 1, 1)
    cur = agg.current("1m")
    assert cur is not None
    assert bar_notional(cur) == big * big + (big + 1) * big  # > 2**64: exact in 128 bits
    assert agg.vwap("1m") == Fraction(2 * big + 1, 2) == bar_vwap(cur)
    agg.add_trade(-5, 1, T0 + M, 0)  # negative prices (spreads) are legal
    bars = agg.bars("1m")
    assert bars_vwap(bars)[0] == pytest.approx(big + 0.5)
    cur = agg.current("1m")
    assert cur is not None and bar_notional(cur) == -5


# ---- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "match"), [
    ((100, -1, T0, 0), "qty_lots -1 must be positive"),
    ((100, 0, T0, 0), "qty_lots 0 must be positive"),
    ((100, 1, T0 + 0.5, 0), "ts_ns must be an integer, got float"),
    ((100, 1.0, T0, 0), "qty_lots must be an integer, got float"),
    ((100, True, T0, 0), "qty_lots must be an integer, got bool"),
    (("100", 1, T0, 0), "price_ticks must be an integer, got str"),
    ((1 << 63, 1, T0, 0), "price_ticks 9223372036854775808 does not fit int64"),
    ((100, 1, -1, 0), "ts_ns -1 is outside"),
    (((100, 1, (1 << 62) + 1, 0)), "ts_ns 4611686018427387905 is outside"),
    ((100, 1, T0, 2), "side 2 must be"),
])
def test_bad_trade_raises_and_changes_nothing(args: tuple[Any, ...], match: str) -> None:
    agg = KlineAggregator(INST, ("1s", "tick:2"))
    agg.add_trade(100, 1, T0 - S, 0)
    before = snapshot(agg)
    with pytest.raises(KlineError, match=match):
        agg.add_trade(*args)
    assert snapshot(agg) == before and agg.rejected == 1


def test_numpy_integer_scalars_are_accepted() -> None:
    agg = KlineAggregator(INST, ("1s",))
    agg.add_trade(np.int64(100), np.int32(5), np.uint64(T0), np.int8(-1))
    cur = agg.current("1s")
    assert cur is not None and (cur["volume_lots"], cur["buy_volume_lots"]) == (5, 0)


def test_volume_overflow_is_rejected_without_change() -> None:
    agg = KlineAggregator(INST, ("1m", "tick:5"))
    agg.add_trade(1, (1 << 63) - 10, T0, 0)
    before = snapshot(agg)
    with pytest.raises(KlineError, match="overflow"):
        agg.add_trade(1, 11, T0 + 1, 0)
    assert snapshot(agg) == before
    with pytest.raises(KlineError, match="overflow"):
        agg.add_trades([1], [11], [T0 + 2])
    assert snapshot(agg) == before


def test_bad_batch_changes_nothing() -> None:
    agg = KlineAggregator(INST, ("1s", "1m"))
    agg.add_trade(100, 1, T0, 0)
    before = snapshot(agg)
    n = 1000
    prices = np.full(n, 100, dtype=np.int64)
    qtys = np.ones(n, dtype=np.int64)
    ts = T0 + np.arange(n, dtype=np.int64) * S
    sides = np.zeros(n, dtype=np.int64)
    bad_qty = qtys.copy()
    bad_qty[777] = -3
    with pytest.raises(KlineError, match=r"add_trades\[777\]: qty_lots -3"):
        agg.add_trades(prices, bad_qty, ts, sides)
    bad_side = sides.copy()
    bad_side[999] = 5
    with pytest.raises(KlineError, match=r"add_trades\[999\]: side 5"):
        agg.add_trades(prices, qtys, ts, bad_side)
    with pytest.raises(KlineError, match="ts_ns must be an integer array"):
        agg.add_trades(prices, qtys, ts.astype(np.float64), sides)
    with pytest.raises(KlineError, match="uint64"):
        agg.add_trades(prices, qtys, ts.astype(np.uint64), sides)
    with pytest.raises(KlineError, match="differ in length"):
        agg.add_trades(prices, qtys[:-1], ts, sides)
    with pytest.raises(KlineError, match="1-d"):
        agg.add_trades(prices.reshape(10, 100), qtys, ts, sides)
    assert snapshot(agg) == before and agg.rejected == 6
    assert agg.add_trades(prices.astype(np.int32), qtys, ts, sides.astype(np.int8)) == n
    assert agg.stats("1s")["closed"] == n - 1  # T0 had two trades, then one a second; the last is open


# ---- callbacks ------------------------------------------------------------------------

def test_callbacks_fire_after_state_changed() -> None:
    seen: list[Any] = []
    agg: KlineAggregator

    def on_close(name: str, bar: Any) -> None:
        cur = agg.current(name)
        # The closing trade is already in the new bar and the bar is in the history.
        seen.append((name, int(bar["close_ticks"]), agg.bars(name)[-1].tolist() == bar.tolist(),
                     None if cur is None else int(cur["open_ticks"])))
        with pytest.raises(ValueError):
            bar["close_ticks"] = 0  # records are read-only snapshots

    agg = KlineAggregator(INST, ("1m",), on_close=on_close)
    agg.add_trade(100, 1, T0, 0)
    agg.add_trade(200, 1, T0 + M, 0)
    assert seen == [("1m", 100, True, 200)]


def test_callback_errors_are_logged_counted_and_contained(caplog: pytest.LogCaptureFixture) -> None:
    updates: list[int] = []

    def boom(name: str, bar: Any) -> None:
        raise RuntimeError("user bug")

    agg = KlineAggregator(INST, ("1s", "1m"), empty="skip", on_close=boom,
                          on_update=lambda n, b: updates.append(int(b["trade_count"])))
    with caplog.at_level(logging.ERROR, logger="engine.kline"):
        agg.add_trade(100, 1, T0, 0)
        agg.add_trade(101, 1, T0 + 2 * M, 0)
    assert agg.callback_errors == 2  # one close per frame, both raised
    assert "user bug" in caplog.text and "Traceback" in caplog.text
    assert updates == [1, 1, 1, 1]  # update callbacks still ran, per trade and frame
    assert len(agg.bars("1s")) > 0
    agg._check_invariants()


def test_update_callback_once_per_frame_per_batch_and_reentrancy() -> None:
    updates: list[tuple[str, int]] = []
    agg = KlineAggregator(INST, ("1m", "tick:1000"), on_update=lambda n, b: updates.append((n, int(b["trade_count"]))))
    agg.add_trades(np.full(10, 100), np.ones(10, dtype=np.int64), T0 + np.arange(10) * S)
    assert updates == [("1m", 10), ("tick:1000", 10)]
    agg.on_update = None
    fed: list[int] = []

    def feed_more(name: str, bar: Any) -> None:  # a callback feeding the aggregator
        if not fed:
            fed.append(1)
            agg.add_trade(300, 1, T0 + 2 * M + 5, 0)

    agg.on_close = feed_more
    agg.add_trade(200, 1, T0 + M, 0)
    agg.add_trade(250, 1, T0 + 2 * M, 0)
    cur = agg.current("1m")
    assert cur is not None and cur["trade_count"] == 2 and cur["close_ticks"] == 300


# ---- views ----------------------------------------------------------------------------

def test_views_are_read_only_counted_and_outlive_the_aggregator() -> None:
    agg = KlineAggregator(INST, ("1s",), history=4)
    for k in range(3):
        agg.add_trade(100 + k, 1, T0 + k * S, 0)
    view = agg.bars_view("1s")
    copy = agg.bars("1s")
    assert view.tolist() == copy.tolist() and len(view) == 2
    assert not view.flags.writeable and copy.flags.writeable
    with pytest.raises(ValueError):
        view[0]["close_ticks"] = 1
    with pytest.raises(ValueError):
        view.setflags(write=True)
    assert agg.view_exports("1s") == 1
    del agg
    gc.collect()
    assert view["close_ticks"].tolist() == [100, 101]  # memory still owned by the view
    del view
    gc.collect()


def test_view_contents_follow_the_ring_copy_does_not() -> None:
    agg = KlineAggregator(INST, ("1s",), history=3)
    for k in range(4):
        agg.add_trade(100 + k, 1, T0 + k * S, 0)
    view = agg.bars_view("1s")
    copy = agg.bars("1s")
    assert view["close_ticks"].tolist() == copy["close_ticks"].tolist() == [100, 101, 102]
    for k in range(4, 7):
        agg.add_trade(100 + k, 1, T0 + k * S, 0)
    assert copy["close_ticks"].tolist() == [100, 101, 102]
    assert agg.bars("1s")["close_ticks"].tolist() == [103, 104, 105]
    # The old view still points at the same memory, overwritten in place by the ring:
    # valid memory, stale meaning (documented). Re-take views after changes.
    assert sorted(view["close_ticks"].tolist()) == [103, 104, 105]
    assert agg.view_exports("1s") == 1
    del view
    assert agg.view_exports("1s") == 0


# ---- venue candles --------------------------------------------------------------------

def test_venue_candles_merge_and_compare() -> None:
    diverged: list[Any] = []
    agg = KlineAggregator(INST, ("1m",), on_divergence=lambda n, local, venue: diverged.append((n, local, venue)))
    agg.add_trade(100, 5, T0 + 1, 0)  # first local bar: partial
    agg.add_trade(101, 5, T0 + M + 1, 0)
    agg.add_trade(103, 5, T0 + M + 2, 0)
    agg.venue_add("1m", T0, 99, 100, 99, 100, 50)
    agg.venue_add("1m", T0 + M, 101, 101, 101, 101, 5)
    agg.venue_modify("1m", T0 + M, 101, 103, 101, 103, 10, T0 + M + 3)
    cur = agg.current("1m", venue=True)
    assert cur is not None and cur["close_ticks"] == 103 and cur["flags"] == VENUE
    assert agg.bars("1m", venue=True)["open_ts_ns"].tolist() == [T0]
    st = agg.stats("1m")
    assert (st["venue_uncomparable"], st["venue_matched"], st["venue_diverged"]) == (1, 0, 0)
    agg.venue_add("1m", T0 + 2 * M, 103, 103, 103, 103, 0)  # finalizes minute 1; local still open
    assert agg.stats("1m")["venue_matched"] == 0
    agg.add_trade(104, 1, T0 + 2 * M, 0)  # local minute 1 closes: compared now
    assert agg.stats("1m")["venue_matched"] == 1 and diverged == []
    agg.add_trade(104, 1, T0 + 2 * M + 5, 0)
    agg.venue_modify("1m", T0 + 2 * M, 104, 104, 104, 104, 1)
    agg.venue_add("1m", T0 + 3 * M, 104, 104, 104, 104, 0)
    agg.advance(T0 + 3 * M)
    st = agg.stats("1m")
    assert (st["venue_matched"], st["venue_diverged"]) == (1, 1)
    name, local, venue = diverged[0]
    assert name == "1m" and int(local["volume_lots"]) == 2 and int(venue["volume_lots"]) == 1


def test_venue_skip_mode_missing_local_bar_diverges() -> None:
    diverged: list[Any] = []
    agg = KlineAggregator(INST, ("1m",), empty="skip", on_divergence=lambda *a: diverged.append(a))
    agg.add_trade(100, 1, T0, 0)
    agg.add_trade(100, 1, T0 + M, 0)
    agg.add_trade(100, 1, T0 + 3 * M, 0)
    agg.venue_add("1m", T0 + 2 * M, 100, 100, 100, 100, 7)
    agg.venue_add("1m", T0 + 3 * M, 100, 100, 100, 100, 1)
    assert agg.stats("1m")["venue_diverged"] == 1
    assert diverged[0][1] is None and int(diverged[0][2]["volume_lots"]) == 7


@pytest.mark.parametrize(("call", "args", "match"), [
    ("venue_modify", ("1m", T0, 1, 1, 1, 1, 1), "modify before any add"),
    ("venue_add", ("1m", T0 + 1, 1, 1, 1, 1, 1), "not a 1m interval start"),
    ("venue_add", ("1m", T0, 1, 1, 2, 1, 1), "inconsistent candle"),
    ("venue_add", ("1m", T0, 1, 1, 1, 1, -1), "volume_lots -1 is negative"),
    ("venue_add", ("tick:5", T0, 1, 1, 1, 1, 1), "only for time frames"),
    ("venue_add", ("3m", T0, 1, 1, 1, 1, 1), "is not one of"),
    ("venue_add", ("1m", 0.5, 1, 1, 1, 1, 1), "open_ts_ns must be an integer"),
])
def test_bad_venue_candles(call: str, args: tuple[Any, ...], match: str) -> None:
    agg = KlineAggregator(INST, ("1m", "tick:5"))
    with pytest.raises(KlineError, match=match):
        getattr(agg, call)(*args)
    assert agg.current("1m", venue=True) is None


def test_venue_add_must_move_forward_and_modify_must_match() -> None:
    agg = KlineAggregator(INST, ("1m",))
    agg.venue_add("1m", T0 + M, 1, 1, 1, 1, 1)
    with pytest.raises(KlineError, match="not after"):
        agg.venue_add("1m", T0, 1, 1, 1, 1, 1)
    with pytest.raises(KlineError, match="not the current venue candle"):
        agg.venue_modify("1m", T0 + 2 * M, 1, 1, 1, 1, 1)
    cur = agg.current("1m", venue=True)
    assert cur is not None and cur["open_ts_ns"] == T0 + M


def test_events_queued_by_update_callbacks_are_delivered_and_interrupts_drop_counted() -> None:
    closes: list[int] = []
    agg: KlineAggregator

    def on_update(name: str, bar: Any) -> None:
        if int(bar["close_ticks"]) == 100:  # feed a trade that closes the bar
            agg.add_trade(101, 1, T0 + M, 0)

    agg = KlineAggregator(INST, ("1m",), on_update=on_update, on_close=lambda n, b: closes.append(int(b["close_ticks"])))
    agg.add_trade(100, 1, T0, 0)
    assert closes == [100] and agg.events_dropped == 0
    cur = agg.current("1m")
    assert cur is not None and cur["close_ticks"] == 101

    def interrupt(name: str, bar: Any) -> None:
        raise KeyboardInterrupt

    two = KlineAggregator(INST, ("1s", "1m"), empty="skip", on_close=interrupt)
    two.add_trade(100, 1, T0, 0)
    with pytest.raises(KeyboardInterrupt):
        two.add_trade(101, 1, T0 + M, 0)  # closes two bars; the first callback interrupts
    assert two.events_dropped == 1 and two.callback_errors == 0
    assert len(two.bars("1s")) == 1 and len(two.bars("1m")) == 1  # state complete regardless


def test_other_threads_are_refused_while_a_batch_runs_without_the_gil() -> None:
    import threading

    n = 2_000_000
    ts = T0 + np.arange(n, dtype=np.int64) * 1_000_000
    prices = np.full(n, 100, dtype=np.int64)
    qtys = np.ones(n, dtype=np.int64)
    refused: list[str] = []
    for _ in range(20):  # the batch must overlap a call from this thread at least once
        agg = KlineAggregator(INST, ("1s", "1m", "5m", "1h", "tick:7", "volume:11", "notional:999"))
        worker = threading.Thread(target=agg.add_trades, args=(prices, qtys, ts))
        worker.start()
        while worker.is_alive():
            try:
                agg.stats("1s")
                agg.add_trade(100, 1, T0, 0)  # late or not, only allowed when no batch runs
            except KlineError as exc:
                refused.append(str(exc))
        worker.join()
        agg._check_invariants()
        if refused:
            break
    assert refused and all("not thread-safe" in msg for msg in refused)


def test_module_doctests() -> None:
    import doctest

    import engine.kline

    result = doctest.testmod(engine.kline)
    assert result.attempted >= 5 and result.failed == 0
