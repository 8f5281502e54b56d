"""Venue field parsing for the Account: status/type/side strings, quantities and prices
given as decimal strings or integers, quote amounts, balances at a decimals scale.

Cold-path helpers (Python objects in and out); every one raises an error naming the
field and the value, and none changes any state.
"""
from fractions import Fraction

from libc.stdint cimport int64_t
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from engine._core.types cimport Status, ST_OK
from engine._core.decimals cimport dec_to_steps, dec_raise
from engine._core.instrument cimport Instrument
from engine._core.positions cimport quote_to_units

from engine.errors import DecimalError
from engine._core.orders import OrderInputError


# Accepted spellings, compared after lower-casing and dropping '_', '-' and spaces:
# the bot platform's CamelCase ("PartiallyFilled"), enum names ("PARTIALLY_FILLED")
# and the stream venue's lower-case states ("open", "partial", "cancelled").
_ORDER_STATUS = {"pendingnew": 0, "pending": 0, "new": 1, "open": 1, "partiallyfilled": 2, "partial": 2,
                 "filled": 3, "pendingcancel": 4, "pendingreplace": 5, "canceled": 6, "cancelled": 6,
                 "expired": 7, "rejected": 8}
_ORDER_TYPE = {"limit": 0, "market": 1, "stop": 2, "stopmarket": 3, "takeprofit": 4,
               "takeprofitmarket": 5, "trailingstopmarket": 6}
_POSITION_STATUS = {"created": 0, "inprogress": 1, "finishing": 2, "completed": 3, "failed": 4}
_SIDE = {"buy": 0, "bid": 0, "long": 0, "sell": 1, "ask": 1, "short": 1}


cdef inline str _norm(object text, str what):
    if not isinstance(text, str):
        raise OrderInputError(f"{what} must be a string, got {type(text).__name__} {text!r}")
    return (<str>text).lower().replace("_", "").replace("-", "").replace(" ", "")


# The bot platform's exact spellings, looked up before any normalisation (hot path).
_ORDER_STATUS_EXACT = {"New": 1, "PartiallyFilled": 2, "Filled": 3, "Expired": 7, "Canceled": 6}


cpdef int parse_order_status(object text) except -1:
    """Order status code from a venue string ("PartiallyFilled", "CANCELED", "open"...).
    ``OrderInputError`` naming the string when unknown. O(len)."""
    code = _ORDER_STATUS_EXACT.get(text) if isinstance(text, str) else None
    if code is not None:
        return code
    code = _ORDER_STATUS.get(_norm(text, "order status"))
    if code is None:
        raise OrderInputError(f"unknown order status {text!r}")
    return code


cpdef int parse_order_type(object text) except -1:
    """Order type code from a venue string ("Limit", "TakeProfitMarket"...). O(len)."""
    code = _ORDER_TYPE.get(_norm(text, "order type"))
    if code is None:
        raise OrderInputError(f"unknown order type {text!r}")
    return code


cpdef int parse_position_status(object text) except -1:
    """Position status code from a venue string ("Created", "InProgress"...). O(len)."""
    code = _POSITION_STATUS.get(_norm(text, "position status"))
    if code is None:
        raise OrderInputError(f"unknown position status {text!r}")
    return code


cpdef int parse_side(object value) except -1:
    """Side code (0 BID/buy/long, 1 ASK/sell/short) from an int or a venue string."""
    if isinstance(value, int):
        if value == 0 or value == 1:
            return value
        raise OrderInputError(f"side must be 0 (BID) or 1 (ASK), got {value!r}")
    code = _SIDE.get(_norm(value, "side"))
    if code is None:
        raise OrderInputError(f"unknown side {value!r}")
    return code


cdef int64_t lots_field(Instrument inst, object value, str field) except? -1:
    # Integers are lots already (stream venue); strings are decimal quantities.
    cdef int64_t v
    if isinstance(value, int):
        if not (-(1 << 63) <= value < (1 << 63)):
            raise OrderInputError(f"{field} {value!r} does not fit int64")
        v = value
    else:
        v = inst.qty_to_lots(value)
    return v


cdef int64_t ticks_field(Instrument inst, object value, str field) except? -1:
    cdef int64_t v
    if value is None:
        return 0
    if isinstance(value, int):
        if not (0 <= value < (1 << 63)):
            raise OrderInputError(f"{field} {value!r} is not a valid price in ticks")
        v = value
    else:
        v = inst.price_to_ticks(value)
    return v


cdef object index_lookup(dict index, object key, str what):
    slot = index.get(key)
    if slot is None:
        raise OrderInputError(f"unknown {what} {key!r}")
    return slot


cdef object item_field(object item, str name):
    try:
        return item[name]
    except KeyError:
        raise OrderInputError(f"missing field {name!r} in {item!r}") from None


cdef object quote_units_any(Instrument inst, object value, str field):
    if isinstance(value, int):
        return value
    return quote_to_units(inst, value)


cdef object scaled_amount(object value, int decimals, str what):
    # Exact int at 10^-decimals from a decimal string (or an int already scaled).
    cdef const char* s
    cdef Py_ssize_t n
    cdef int64_t out = 0
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise DecimalError(f"{what}: expected a decimal string, got {type(value).__name__} {value!r}")
    s = PyUnicode_AsUTF8AndSize(value, &n)
    cdef Status st = dec_to_steps(s, n, decimals, 1, &out)
    if st != ST_OK:
        dec_raise(st, value, f"{what} (scale 10^-{decimals})")
    return out


cdef object entry_notional(Instrument inst, object entry_price, int64_t qty_lots):
    # entry_price / tick_size * qty_lots, exact; must be a whole number of quote units.
    if not isinstance(entry_price, str) or not _is_plain_decimal(entry_price) or entry_price.startswith("-"):
        raise DecimalError(f"{inst.symbol} entry_price: expected a non-negative decimal string, got {entry_price!r}")
    # Common case: the average entry is a whole number of ticks; exact integer product.
    cdef const char* text
    cdef Py_ssize_t n
    cdef int64_t ticks
    text = PyUnicode_AsUTF8AndSize(entry_price, &n)
    if dec_to_steps(text, n, inst.price_decimals, inst.tick_units, &ticks) == ST_OK:
        return <object>ticks * qty_lots
    # An average between ticks: exact rational arithmetic (cold path).
    units = Fraction(entry_price) / Fraction(inst.tick_size) * qty_lots
    if units.denominator != 1:
        raise DecimalError(f"{inst.symbol} entry_price {entry_price!r} * qty {qty_lots} lots is not a whole "
                           f"number of quote units (tick {inst.tick_size} * lot {inst.lot_size})")
    return units.numerator


cdef bint _is_plain_decimal(str text):
    cdef Py_ssize_t i, n = len(text), digits = 0, dots = 0
    for i in range(n):
        c = text[i]
        if c == "." and dots == 0:
            dots += 1
        elif "0" <= c <= "9":
            digits += 1
        elif not (i == 0 and (c == "-" or c == "+")):
            return False
    return digits > 0
