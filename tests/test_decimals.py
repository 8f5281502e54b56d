"""Exact decimal conversion: known values, rejects, and hypothesis round trips."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import DecimalError, Instrument

INT64_MAX = 2**63 - 1


def test_issue_examples() -> None:
    inst = Instrument("BTCUSDT", tick_size="0.01", lot_size="0.00001")
    assert inst.price_to_ticks("61837.63") == 6183763
    assert inst.qty_to_lots("0.02") == 2000
    assert inst.ticks_to_price(6183763) == "61837.63"
    assert inst.price_to_ticks(b"61837.63000000") == 6183763  # Binance pads to 8 decimals
    assert inst.lots_to_qty(2000) == "0.02000"
    assert inst.lots_to_qty(2000, strip_zeros=True) == "0.02"


@pytest.mark.parametrize(
    "tick, text, ticks",
    [
        ("0.5", "10.5", 21),
        ("0.5", "-0.5", -1),
        ("0.25", "1.75", 7),
        ("5", "15", 3),
        ("100", "2500", 25),
        ("0.010", "1.23", 123),  # trailing zeros in the step do not change it
        ("1", "+7", 7),
        ("0.01", ".5", 50),
        ("0.01", "5.", 500),
        ("0.00000001", "0.00000001", 1),
    ],
)
def test_steps_that_are_not_powers_of_ten(tick: str, text: str, ticks: int) -> None:
    inst = Instrument("X", tick_size=tick, lot_size="1")
    assert inst.price_to_ticks(text) == ticks


@pytest.mark.parametrize(
    "text, reason",
    [
        ("61837.631", "not a whole number"),
        ("1e5", "exponent"),
        ("abc", "not a decimal"),
        ("", "no digits"),
        ("-", "no digits"),
        (".", "no digits"),
        ("1.2.3", "not a decimal"),
        ("12 ", "not a decimal"),
        (" 12", "not a decimal"),
        ("99999999999999999999", "overflows"),
        ("92233720368547758.08", "overflows"),  # INT64_MAX + 1 ticks
        ("0x10", "not a decimal"),
        ("1,5", "not a decimal"),
    ],
)
def test_rejects_name_the_value(text: str, reason: str) -> None:
    inst = Instrument("BTCUSDT", tick_size="0.01", lot_size="0.00001")
    with pytest.raises(DecimalError) as err:
        inst.price_to_ticks(text)
    assert reason in str(err.value)
    assert repr(text) in str(err.value)


def test_non_multiple_of_a_non_decimal_step() -> None:
    inst = Instrument("X", tick_size="0.5", lot_size="5")
    with pytest.raises(DecimalError, match="not a whole number"):
        inst.price_to_ticks("10.25")
    with pytest.raises(DecimalError, match="not a whole number"):
        inst.qty_to_lots("12")


def test_int64_edges() -> None:
    inst = Instrument("X", tick_size="1", lot_size="1")
    assert inst.price_to_ticks(str(INT64_MAX)) == INT64_MAX
    assert inst.price_to_ticks(str(-INT64_MAX)) == -INT64_MAX
    assert inst.ticks_to_price(-(2**63)) == str(-(2**63))
    fine = Instrument("X", tick_size="0.01", lot_size="1")
    assert fine.price_to_ticks("92233720368547758.07") == INT64_MAX


@pytest.mark.parametrize("step", ["0", "-1", "abc", "1e-3", "0.0000000000000000001"])
def test_bad_step_sizes(step: str) -> None:
    with pytest.raises(DecimalError):
        Instrument("X", tick_size=step, lot_size="1")


def test_non_string_inputs_rejected() -> None:
    inst = Instrument("X", tick_size="0.01", lot_size="1")
    with pytest.raises(DecimalError, match="expected a decimal string"):
        inst.price_to_ticks(1.5)  # type: ignore[arg-type]


steps = st.sampled_from(["0.01", "0.00001", "0.5", "0.25", "5", "1", "0.00000001", "25", "0.125"])


@settings(max_examples=3000, deadline=None)
@given(step=steps, ticks=st.integers(min_value=-(10**15), max_value=10**15), strip=st.booleans())
def test_round_trip(step: str, ticks: int, strip: bool) -> None:
    inst = Instrument("X", tick_size=step, lot_size=step)
    text = inst.ticks_to_price(ticks, strip_zeros=strip)
    assert inst.price_to_ticks(text) == ticks
    assert Decimal(text) == Decimal(step) * ticks  # the text is the exact value
    assert inst.qty_to_lots(inst.lots_to_qty(ticks)) == ticks


@settings(max_examples=3000, deadline=None)
@given(step=steps, value=st.decimals(allow_nan=False, allow_infinity=False, places=10,
                                     min_value=-(10**9), max_value=10**9))
def test_agrees_with_decimal(step: str, value: Decimal) -> None:
    """The conversion accepts exactly the multiples of the step, and gets them right."""
    inst = Instrument("X", tick_size=step, lot_size="1")
    text = format(value, "f")
    quotient = value / Decimal(step)
    if quotient == quotient.to_integral_value():
        assert inst.price_to_ticks(text) == int(quotient)
    else:
        with pytest.raises(DecimalError, match="not a whole number"):
            inst.price_to_ticks(text)


@settings(max_examples=2000, deadline=None)
@given(text=st.text(alphabet="0123456789.-+eE x", max_size=24))
def test_garbage_never_crashes_and_never_half_parses(text: str) -> None:
    inst = Instrument("X", tick_size="0.01", lot_size="1")
    try:
        ticks = inst.price_to_ticks(text)
    except DecimalError:
        return
    assert Decimal(text) == Decimal("0.01") * ticks
