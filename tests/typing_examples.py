"""Typical user code, type-checked by tests/test_typing.py so the stubs cannot drift
from how the API is documented to be used. It is also imported and run."""
from __future__ import annotations

import numpy as np

from engine import CrossPolicy, Instrument, OrderBook, Side


def top_of_book_example() -> tuple[int, int] | None:
    inst = Instrument("BTCUSDT", tick_size="0.01", lot_size="0.00001")
    book = OrderBook(inst, cross_policy=CrossPolicy.PRUNE, max_depth=1000)
    book.set(Side.BID, inst.price_to_ticks("61837.63"), inst.qty_to_lots("0.02"))
    book.apply(np.array([1], np.int8), np.array([6183764]), np.array([150000]), update_id=7)
    best: tuple[int, int] | None = book.best_bid()
    levels = book.asks(10)
    price_ticks: int = int(levels["price"][0])
    spread: int | None = book.spread()
    mid: float | None = book.mid()
    assert spread == 1 and mid is not None and price_ticks == 6183764
    text: str = inst.ticks_to_price(price_ticks)
    assert text == "61837.64"
    return best
