"""Binance decoder and snapshot+diff sync on synthetic frames: envelopes, field order,
sequence faults (gaps, duplicates, reordering, stale snapshots, recovery), callbacks,
and the bad-input suite (DecodeError with reason and offset, counted, book unchanged)."""
from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest

from engine import BookCrossedError, BookError, CrossPolicy, DecodeError, Instrument, OrderBook
from feeds.binance_decode import BinanceDecoder
from feeds.binance_sync import BinanceBookSync

INST = Instrument("BTCUSDT", "0.01", "0.00001")


def depth(U: int, u: int, bids: list[list[str]], asks: list[list[str]], *, pu: int | None = None,
          combined: bool = True, E: int = 1723161255208) -> bytes:
    data: dict[str, Any] = {"e": "depthUpdate", "E": E, "s": "BTCUSDT", "U": U, "u": u}
    if pu is not None:
        data["pu"] = pu
    data["b"] = bids
    data["a"] = asks
    if combined:
        return json.dumps({"stream": "btcusdt@depth@100ms", "data": data}).encode()
    return json.dumps(data).encode()


def snapshot(last_update_id: int, bids: list[list[str]], asks: list[list[str]]) -> bytes:
    return json.dumps({"lastUpdateId": last_update_id, "bids": bids, "asks": asks}).encode()


def ticker(u: int, b: str, B: str, a: str, A: str) -> bytes:
    return json.dumps({"stream": "btcusdt@bookTicker",
                       "data": {"u": u, "s": "BTCUSDT", "b": b, "B": B, "a": a, "A": A}}).encode()


SNAP = snapshot(100, [["100.00", "1.0"], ["99.00", "2.0"]], [["101.00", "1.5"], ["102.00", "3"]])


def book_state(book: OrderBook) -> tuple[Any, ...]:
    return (book.bids().tobytes(), book.asks().tobytes(), book.last_update_id, book.event_ts_ns)


def make_sync(market: str = "spot", **kw: Any) -> tuple[OrderBook, BinanceBookSync]:
    book = OrderBook(INST)
    return book, BinanceBookSync(book, market, **kw)


# --- decoder -----------------------------------------------------------------------

def test_decode_depth_bare_and_combined_agree() -> None:
    dec = BinanceDecoder(INST)
    a = dec.decode_frame(depth(5, 9, [["100.10", "0.5"]], [["100.20", "0"]], combined=True))
    b = dec.decode_frame(depth(5, 9, [["100.10", "0.5"]], [["100.20", "0"]], combined=False))
    assert a == b
    assert a["kind"] == "depth"
    assert (a["first_update_id"], a["final_update_id"], a["prev_final_update_id"]) == (5, 9, -1)
    assert a["event_ts_ns"] == 1723161255208 * 1_000_000
    assert a["levels"] == [(0, 10010, 50000), (1, 10020, 0)]


def test_decode_any_field_order_whitespace_unknown_fields_escaped_keys() -> None:
    dec = BinanceDecoder(INST)
    frame = (b' {\n "data" : { "a":[ ["100.20" , "1"] ], "zz":{"u":[1,2,{"b":3}]},\t"u":9,'
             b' "\\u0055":5, "b":[], "new_field":null, "e":"depthUpdate", "E":1 },'
             b' "stream":"btcusdt@depth" } ')
    out = dec.decode_frame(frame)
    assert (out["kind"], out["first_update_id"], out["final_update_id"]) == ("depth", 5, 9)
    assert out["levels"] == [(1, 10020, 100000)]


def test_decode_book_ticker_spot_and_futures() -> None:
    dec = BinanceDecoder(INST)
    spot = dec.decode_frame(ticker(77, "61837.63000000", "3.78826000", "61837.64000000", "1.54698000"))
    assert spot == {"kind": "book_ticker", "update_id": 77, "bid_price_ticks": 6183763,
                    "bid_qty_lots": 378826, "ask_price_ticks": 6183764, "ask_qty_lots": 154698,
                    "event_ts_ns": -1}
    fut = dec.decode_frame(b'{"e":"bookTicker","u":78,"s":"BTCUSDT","b":"1.00","B":"2","a":"1.01",'
                           b'"A":"3","T":5,"E":6}')
    assert fut["kind"] == "book_ticker" and fut["event_ts_ns"] == 6_000_000


def test_decode_trade_and_agg_trade() -> None:
    dec = BinanceDecoder(INST)
    t = dec.decode_frame(b'{"stream":"btcusdt@trade","data":{"e":"trade","E":2,"s":"BTCUSDT","t":12,'
                         b'"p":"61837.63000000","q":"0.02000000","T":1,"m":true,"M":true}}')
    assert (t["kind"], t["trade_id"], t["price_ticks"], t["qty_lots"], t["taker_side"]) == (
        "trade", 12, 6183763, 2000, 1)
    assert t["trade_ts_ns"] == 1_000_000
    a = dec.decode_frame(b'{"e":"aggTrade","E":2,"s":"BTCUSDT","a":5,"p":"1.00","q":"1","f":7,"l":9,'
                         b'"T":1,"m":false}')
    assert (a["kind"], a["trade_id"], a["first_trade_id"], a["last_trade_id"], a["taker_side"]) == (
        "agg_trade", 5, 7, 9, 0)


def test_decode_snapshot_and_ignored_events() -> None:
    dec = BinanceDecoder(INST)
    s = dec.decode_frame(SNAP)
    assert s["kind"] == "snapshot" and s["final_update_id"] == 100
    assert s["levels"] == [(0, 10000, 100000), (0, 9900, 200000), (1, 10100, 150000), (1, 10200, 300000)]
    assert dec.decode_frame(b'{"result":null,"id":1}')["kind"] == "ignored"
    assert dec.decode_frame(b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT",'
                            b'"k":{"t":1,"o":"1.0"}}}')["kind"] == "ignored"


def test_futures_diff_needs_pu_and_spot_does_not() -> None:
    usdm = BinanceDecoder(INST, "usdm")
    assert usdm.decode_frame(depth(5, 9, [], [], pu=4))["prev_final_update_id"] == 4
    with pytest.raises(DecodeError, match="field 'pu': required field missing"):
        usdm.decode_frame(depth(5, 9, [], []))
    coinm = BinanceDecoder(Instrument("BTCUSD_PERP", "0.1", "1"), "coinm")
    out = coinm.decode_frame(b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSD_PERP","ps":"BTCUSD",'
                             b'"U":5,"u":9,"pu":4,"b":[["61800.1","12"]],"a":[]}')
    assert out["levels"] == [(0, 618001, 12)]


def test_scratch_grows_to_largest_frame_then_stays() -> None:
    dec = BinanceDecoder(INST)
    big = snapshot(1, [[f"{1000 - i}.00", "1"] for i in range(900)], [[f"{2000 + i}.00", "1"] for i in range(900)])
    dec.decode_frame(big)
    cap = dec.scratch_capacity
    assert cap >= 1800
    for _ in range(3):
        dec.decode_frame(big)
        dec.decode_frame(depth(1, 2, [["1.00", "1"]], []))
    assert dec.scratch_capacity == cap


# --- the bad-input suite ------------------------------------------------------------

GOOD_DIFF = depth(101, 105, [["100.50", "0.5"]], [["101.00", "0"]])

BAD_FRAMES = [
    # (frame, substring of the reason)
    (GOOD_DIFF[:-7], "truncated input"),
    (GOOD_DIFF[:40], "truncated input"),
    (b"", "truncated input"),
    (b"garbage", "invalid JSON syntax"),
    (b"\x00\x01\x02", "invalid JSON syntax"),
    (GOOD_DIFF + b"}", "trailing bytes"),
    (GOOD_DIFF.replace(b'"U": 101', b'"U": "101"'), "field 'U': wrong JSON type"),
    (GOOD_DIFF.replace(b'"U": 101', b'"U": 101.5'), "field 'U': invalid number"),
    (GOOD_DIFF.replace(b'"U": 101', b'"U": 99999999999999999999'), "field 'U': integer overflows int64"),
    (GOOD_DIFF.replace(b'"U": 101', b'"U": 106'), "field 'U': field value not allowed"),
    (GOOD_DIFF.replace(b'"b": [["100.50", "0.5"]]', b'"b": "100.50"'), "field 'b': wrong JSON type"),
    (GOOD_DIFF.replace(b'"b": [["100.50", "0.5"]]', b'"b": [{"p": "100.50"}]'), "field 'b': wrong JSON type"),
    (GOOD_DIFF.replace(b'"b": [["100.50", "0.5"]]', b'"b": [["100.50", "0.5", "x"]]'),
     "field 'b': field value not allowed"),
    (GOOD_DIFF.replace(b'"b": [["100.50", "0.5"]]', b'"b": [["100.50"]]'), "field 'b': field value not allowed"),
    (GOOD_DIFF.replace(b'"100.50"', b'"100.505"'), "not a whole number of steps '100.505'"),
    (GOOD_DIFF.replace(b'"0.5"', b'"0.000001"'), "not a whole number of steps '0.000001'"),
    (GOOD_DIFF.replace(b'"100.50"', b'"1e2"'), "exponent notation"),
    (GOOD_DIFF.replace(b'"100.50"', b'"99999999999999999999.00"'), "overflows int64"),
    (GOOD_DIFF.replace(b'"0.5"', b'"-0.5"'), "negative"),
    (GOOD_DIFF.replace(b'"100.50"', b'"10O.50"'), "not a decimal number"),
    (GOOD_DIFF.replace(b'"BTCUSDT"', b'"ETHUSDT"'), "field 's': field value not allowed"),
    (GOOD_DIFF.replace(b'"BTCUSDT"', b'"BTC\xffUSDT"'), "invalid UTF-8"),
    (GOOD_DIFF.replace(b'"BTCUSDT"', b'"BTC\xc0\xafUSDT"'), "invalid UTF-8"),
    (GOOD_DIFF.replace(b'"BTCUSDT"', b'"BTC\nUSDT"'), "control character"),
    (GOOD_DIFF.replace(b'"u": 105', b'"u": 105, "u": 106'), "field 'u': duplicate field"),
    (GOOD_DIFF.replace(b'"U": 101, ', b""), "field 'U': required field missing"),
    (GOOD_DIFF.replace(b'"E": 1723161255208', b'"E": 9223372036855'), "field 'E': integer overflows"),
    (GOOD_DIFF.replace(b'"stream"', b'"pu": 5, "stream"'), "BTCUSDT frame: field value not allowed"),
    (GOOD_DIFF.replace(b'"stream"', b'"e": "depthUpdate", "stream"'), "field 'e': duplicate field"),
    (ticker(105, "1.00", "1", "x", "1"), "field 'a': bad decimal"),
    (b'{"e":"aggTrade","a":"5","p":"1.00","q":"1","m":false}', "field 'a': wrong JSON type"),
    (b'{"e":"trade","t":1,"p":"1.00","q":"1","m":"yes"}', "field 'm': wrong JSON type"),
    (b'{"lastUpdateId":5,"bids":[],"asks":[["1.00","1"],["1.00"]]}', "field 'asks'"),
    (b'{"x":' + b"[" * 200, "nesting deeper than 64"),
    (b"[]", "frame: wrong JSON type"),
]


@pytest.mark.parametrize("frame, reason", BAD_FRAMES)
def test_bad_frames_raise_are_counted_and_leave_the_book_unchanged(frame: bytes, reason: str) -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    sync.feed(depth(101, 103, [["100.10", "0.25"]], []))
    before = book_state(book)
    counters = sync.counters()
    with pytest.raises(DecodeError) as info:
        sync.feed(frame)
    assert reason in info.value.reason, info.value.reason
    assert 0 <= info.value.offset <= len(frame)
    assert sync.errors == counters["errors"] + 1
    assert sync.frames == counters["frames"] + 1
    assert book_state(book) == before
    assert sync.state_name == "live"
    # The feed goes on: the next good diff applies.
    sync.feed(depth(104, 105, [["100.20", "1"]], []))
    assert book.last_update_id == 105


def test_bad_input_offsets_point_at_the_problem() -> None:
    frame = GOOD_DIFF.replace(b'"100.50"', b'"100.505"')
    with pytest.raises(DecodeError) as info:
        BinanceDecoder(INST).decode_frame(frame)
    assert frame[info.value.offset:].startswith(b'100.505"')
    frame = GOOD_DIFF.replace(b'"BTCUSDT"', b'"BTC\xffUSDT"')
    with pytest.raises(DecodeError) as info:
        BinanceDecoder(INST).decode_frame(frame)
    assert frame[info.value.offset] == 0xFF


def test_memoryview_and_bytearray_frames() -> None:
    book, sync = make_sync()
    sync.feed(memoryview(bytearray(SNAP)))
    sync.feed(bytearray(depth(101, 102, [["100.00", "4"]], [])))
    assert book.best_bid() == (10000, 400000)
    with pytest.raises(BufferError):
        sync.feed(memoryview(SNAP)[::2])


# --- sync: the happy path and the sequence faults -------------------------------------

def test_buffer_then_snapshot_drops_stale_and_bridges() -> None:
    book, sync = make_sync()
    assert sync.state_name == "awaiting_snapshot"
    sync.feed(depth(90, 95, [["50.00", "1"]], []))          # stale once the snapshot is in
    sync.feed(depth(96, 102, [["100.00", "0"]], []))        # bridges 100 + 1
    sync.feed(depth(103, 104, [], [["101.00", "9"]]))
    assert sync.pending_diffs == 3 and book.bid_count == 0
    sync.feed(SNAP)
    assert sync.state_name == "live"
    assert (sync.dropped_stale, sync.depth_applied, sync.gaps, sync.pending_diffs) == (1, 2, 0, 0)
    assert book.last_update_id == 104
    assert book.best_bid() == (9900, 200000)
    assert book.best_ask() == (10100, 900000)


def test_dropped_diff_is_a_gap_then_a_new_snapshot_recovers() -> None:
    gaps: list[str] = []
    book, sync = make_sync(on_gap=lambda s, reason: gaps.append(reason))
    sync.feed(SNAP)
    sync.feed(depth(101, 102, [["100.10", "1"]], []))
    # 103..104 is lost.
    sync.feed(depth(105, 106, [["100.20", "1"]], []))
    assert sync.state_name == "out_of_sync" and not sync.in_sync
    assert sync.gaps == 1 and gaps == ["diff U=105 != previous u + 1 = 103"]
    frozen = book_state(book)
    sync.feed(depth(107, 110, [["100.30", "1"]], []))
    sync.feed(ticker(110, "100.30", "1", "101.00", "1.5"))
    assert book_state(book) == frozen                        # nothing applied while out of sync
    assert sync.bbo_checks == 0
    # A new snapshot at 108: the buffered 105..106 is stale, 107..110 bridges it.
    sync.feed(snapshot(108, [["100.20", "1"], ["100.00", "1.0"]], [["101.00", "1.5"]]))
    assert sync.state_name == "live" and sync.in_sync
    assert book.last_update_id == 110
    assert book.best_bid() == (10030, 100000)
    sync.feed(depth(111, 111, [], [["101.00", "2"]]))
    sync.feed(ticker(111, "100.30", "1", "101.00", "2"))
    assert (sync.bbo_checks, sync.bbo_mismatches, sync.gaps, sync.snapshots) == (1, 0, 1, 2)
    assert len(gaps) == 1


def test_duplicated_frames_are_dropped_as_stale() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    d1 = depth(101, 102, [["100.10", "1"]], [])
    sync.feed(d1)
    state = book_state(book)
    sync.feed(d1)
    sync.feed(SNAP)                          # a late copy of the snapshot: stale too
    sync.feed(d1)
    assert book_state(book) == state
    assert sync.dropped_stale == 3 and sync.gaps == 0 and sync.snapshots == 1


def test_newer_snapshot_while_live_resyncs() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    sync.feed(depth(101, 102, [["100.10", "1"]], []))
    sync.feed(snapshot(110, [["99.00", "5"]], [["101.00", "1"]]))
    assert sync.state_name == "bridging" and book.best_bid() == (9900, 500000)
    sync.feed(depth(103, 108, [["100.20", "1"]], []))     # stale against 110
    sync.feed(depth(109, 111, [["99.50", "1"]], []))      # bridges 110 + 1
    assert sync.state_name == "live" and book.best_bid() == (9950, 100000)
    assert (sync.dropped_stale, sync.gaps, sync.snapshots) == (1, 0, 2)


def test_reordered_frames_are_a_gap() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    sync.feed(depth(103, 104, [["100.20", "1"]], []))
    assert sync.gaps == 1 and sync.state_name == "out_of_sync"
    assert book.best_bid() == (10000, 100000)
    sync.feed(depth(101, 102, [["100.10", "1"]], []))
    assert book.best_bid() == (10000, 100000)                # still nothing applied
    # Both are buffered; a snapshot at 100 replays them in arrival order: 103..104
    # does not bridge 101, so the sync stays out of sync (a second gap).
    sync.feed(SNAP)
    assert sync.state_name == "out_of_sync" and sync.gaps == 2


def test_snapshot_older_than_first_buffered_diff_is_a_gap() -> None:
    gaps: list[str] = []
    book, sync = make_sync(on_gap=lambda s, r: gaps.append(r))
    sync.feed(depth(150, 160, [["100.10", "1"]], []))
    sync.feed(depth(161, 170, [["100.20", "1"]], []))
    sync.feed(SNAP)                                          # lastUpdateId 100 < 150 - 1
    assert sync.state_name == "out_of_sync"
    assert gaps == ["first diff U=150 u=160 does not cover snapshot lastUpdateId=100 + 1"]
    assert book.last_update_id == 100 and sync.depth_applied == 0
    assert sync.pending_diffs == 2                           # kept for the next snapshot
    sync.feed(snapshot(155, [["100.00", "1"]], [["101.00", "1"]]))
    assert sync.state_name == "live" and book.last_update_id == 170
    assert book.best_bid() == (10020, 100000)


def test_futures_chain_uses_pu() -> None:
    book, sync = make_sync("usdm")
    sync.feed(depth(95, 100, [["100.10", "1"]], [], pu=94))  # u == lastUpdateId: bridges
    sync.feed(depth(101, 104, [], [["101.00", "0"]], pu=100))
    sync.feed(SNAP)
    assert sync.depth_applied == 2 and sync.gaps == 0
    sync.feed(depth(110, 120, [], [], pu=104))               # U jumps; pu chains: fine
    assert sync.depth_applied == 3 and sync.gaps == 0
    sync.feed(depth(121, 130, [], [], pu=119))
    assert sync.gaps == 1 and sync.last_gap_reason == "diff pu=119 != previous u=120"


def test_futures_first_diff_must_cover_last_update_id() -> None:
    book, sync = make_sync("coinm")
    sync.feed(depth(101, 104, [], [], pu=100))               # U > lastUpdateId: gap
    sync.feed(SNAP)
    assert sync.gaps == 1 and sync.depth_applied == 0


def test_crossing_diff_is_rejected_counted_and_desyncs() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    before = book_state(book)
    sync.feed(depth(101, 102, [["105.00", "1"]], []))       # bid above the best ask
    assert sync.crossed == 1 and sync.state_name == "out_of_sync"
    assert book_state(book) == before


def test_snapshot_rejected_by_the_book_is_counted_and_changes_nothing() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    before = book_state(book)
    with pytest.raises(BookCrossedError):
        sync.feed(snapshot(200, [["105.00", "1"]], [["101.00", "1"]]))
    with pytest.raises(BookError, match="repeats"):
        sync.feed(snapshot(200, [["99.00", "1"], ["99.00", "2"]], [["101.00", "1"]]))
    assert sync.errors == 2 and sync.snapshots == 1 and sync.state_name == "bridging"
    assert book_state(book) == before


def test_crossed_book_counted_under_allow() -> None:
    book = OrderBook(INST, cross_policy=CrossPolicy.ALLOW)
    sync = BinanceBookSync(book)
    sync.feed(SNAP)
    sync.feed(depth(101, 102, [["105.00", "1"]], []))
    assert sync.crossed == 1 and sync.state_name == "live"


def test_bbo_check_counts_each_difference() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    sync.feed(ticker(100, "100.00", "1.0", "101.00", "1.5"))
    assert (sync.bbo_checks, sync.bbo_mismatches) == (1, 0)
    sync.feed(ticker(100, "100.01", "1.0", "101.00", "1.6"))
    assert (sync.bbo_checks, sync.bbo_mismatches) == (2, 2)
    # A ticker ahead of the book waits for the diff that ends at its u.
    sync.feed(ticker(103, "100.50", "2", "101.00", "1.5"))
    assert sync.bbo_checks == 2
    sync.feed(depth(101, 103, [["100.50", "2"]], []))
    assert (sync.bbo_checks, sync.bbo_mismatches) == (3, 2)


def test_callback_errors_are_logged_counted_and_do_not_break_the_feed(caplog: pytest.LogCaptureFixture) -> None:
    def bad(*args: object) -> None:
        raise RuntimeError("user bug")

    book, sync = make_sync(on_gap=bad, on_trade=bad)
    sync.feed(SNAP)
    with caplog.at_level(logging.ERROR, logger="feeds.binance_sync"):
        sync.feed(depth(105, 106, [], []))
        sync.feed(b'{"e":"trade","t":1,"p":"1.00","q":"1","m":false,"T":3}')
    assert sync.callback_errors == 2 and sync.gaps == 1 and sync.trades == 1
    assert "user bug" in caplog.text
    assert sync.last_trade == (100, 100000, 0, 1, 3_000_000)


def test_on_trade_receives_integers() -> None:
    seen: list[tuple[Any, ...]] = []
    book, sync = make_sync(on_trade=lambda s, *a: seen.append(a))
    sync.feed(b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":2,"s":"BTCUSDT","a":5,'
              b'"p":"61837.63","q":"0.5","f":1,"l":2,"T":1,"m":true}}')
    assert seen == [(6183763, 50000, 1, 5, 1_000_000)]


def test_buffer_is_bounded() -> None:
    book, sync = make_sync(max_buffered=8)
    for i in range(20):
        sync.feed(depth(10 * i + 1, 10 * i + 10, [["1.00", "1"]], []))
    assert sync.pending_diffs <= 8 and sync.buffer_dropped == 20 - sync.pending_diffs
    # The newest diffs survive: a snapshot at 190 bridges with the last one.
    sync.feed(snapshot(190, [["1.00", "2"]], [["2.00", "1"]]))
    assert sync.state_name == "live" and book.last_update_id == 200


def test_reset_forgets_buffer_and_desyncs() -> None:
    book, sync = make_sync()
    sync.feed(SNAP)
    sync.feed(depth(105, 106, [], []))
    sync.reset()
    assert sync.state_name == "out_of_sync" and sync.pending_diffs == 0
    assert np.array_equal(book.bids()["price"], [10000, 9900])
