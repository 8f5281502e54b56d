"""Hypothesis fuzzing (derandomized: the same examples every run) of the JSON scanner
and the Binance decoder.

Valid documents: the scanner accepts everything ``json.dumps`` writes (any
separators, ASCII or UTF-8) and reads back the same values. Mutated frames (real
Binance frames with bytes flipped, inserted, deleted, truncated): the scanner agrees
with ``json.loads`` on validity (up to the documented differences below), nothing
crashes, and a frame the sync rejects leaves the book exactly as it was.

Documented differences from ``json.loads``: the scanner refuses lone UTF-16 surrogate
escapes ("\\ud800"), which Python accepts, and Python accepts NaN/Infinity, which are
not JSON; the scanner limits nesting to 64 levels.
"""
from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import DecodeError, Instrument, OrderBook
from engine._core import jscan
from feeds.binance_sync import BinanceBookSync

DATA = Path(__file__).parent / "data" / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.xz"


def _real_frames() -> list[bytes]:
    out: list[bytes] = []
    with lzma.open(DATA) as fh:
        for i, line in enumerate(fh):
            if i >= 400:
                break
            payload = line.rstrip(b"\n").split(b" ", 1)[1]
            if len(payload) < 4000:          # leave the 40 KB snapshot out: slow to mutate
                out.append(payload)
    return out


REAL = _real_frames()
SNAPSHOT = b'{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[["61837.64000000","1.0"]]}'

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _python_accepts(frame: bytes) -> bool:
    try:
        json.loads(frame.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


@settings(max_examples=200, deadline=None, derandomize=True)
@given(json_values, st.booleans(), st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
def test_valid_documents_are_accepted(value: Any, ensure_ascii: bool, seps: tuple[str, str]) -> None:
    frame = json.dumps(value, ensure_ascii=ensure_ascii, separators=seps).encode()
    jscan.scan_validate(frame)
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, str):
                assert jscan.find_string(frame, key) == v
            elif isinstance(v, int) and not isinstance(v, bool):
                assert jscan.find_int(frame, key) == v


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == "flip" and frame:
            frame[i] = draw(st.integers(0, 255))
        elif op == "insert":
            frame[i:i] = draw(st.sampled_from([b"\\", b'"', b",", b"[", b"}", b"\xff", b"\xc3", b"\x00",
                                               b" ", b"1e5", b"-", b".", b"\\u", b"\xed\xa0\x80"]))
        elif op == "delete" and frame:
            del frame[i]
        elif op == "truncate":
            del frame[i:]
        elif op == "dup":
            frame[i:i] = frame[i:i + draw(st.integers(1, 20))]
    return bytes(frame)


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_frames_scanner_agrees_with_json(frame: bytes) -> None:
    try:
        jscan.scan_validate(frame)
        accepted = True
    except DecodeError as exc:
        accepted = False
        assert 0 <= exc.offset <= len(frame)
    if b"\\u" in frame:
        return  # lone-surrogate escapes: see the module docstring
    assert accepted == _python_accepts(frame)


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=5))
def test_mutated_frames_never_corrupt_the_book(frames: list[bytes]) -> None:
    book = OrderBook(Instrument("BTCUSDT", "0.01", "0.00000001"))
    sync = BinanceBookSync(book)
    sync.feed(SNAPSHOT)
    errors = 0
    for frame in frames:
        before = (book.bids().tobytes(), book.asks().tobytes(), book.last_update_id, book.version)
        try:
            sync.feed(frame)
        except DecodeError as exc:
            errors += 1
            assert 0 <= exc.offset <= len(frame)
            assert (book.bids().tobytes(), book.asks().tobytes(), book.last_update_id, book.version) == before
        book._check_invariants()
    assert sync.errors == errors and sync.frames == len(frames) + 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        jscan.scan_validate(data)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data)
    book = OrderBook(Instrument("BTCUSDT", "0.01", "0.00000001"))
    try:
        BinanceBookSync(book).feed(data)
    except DecodeError:
        pass
    assert len(book) == 0


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(st.text(alphabet="00123456789.-+eE ", min_size=0, max_size=30),
       st.sampled_from(["1", "0.01", "0.5", "0.00000001", "5", "0.25", "0.001", "0.000000000001"]))
def test_decimal_fast_path_equals_dec_to_steps(text: str, step: str) -> None:
    """jscan parses plain quoted decimals itself (one pass); every value it accepts or
    rejects must match decimals.dec_to_steps, reached through Instrument."""
    from engine.errors import DecimalError

    inst = Instrument("X", step, step)
    try:
        expected: int | None = inst.price_to_ticks(text)
    except DecimalError:
        expected = None
    # Tight (the value ends the frame: byte loops) and padded (8-byte SWAR loads).
    for frame in (b'{"p":"' + text.encode() + b'"}',
                  b'{"p":"' + text.encode() + b'","pad":"0000000000000000"}'):
        try:
            got: int | None = jscan.find_steps(frame, step, "p")
        except DecodeError as exc:
            assert "bad decimal" in exc.reason
            got = None
        assert got == expected, frame
