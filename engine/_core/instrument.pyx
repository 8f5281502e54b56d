"""Instrument: a symbol with exact tick and lot sizes, and its decimal conversions."""
from libc.stdint cimport int32_t, int64_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from engine._core.types cimport Status, ST_OK
from engine._core.decimals cimport dec_to_steps, dec_format, dec_raise, dec_parse_step

from engine.errors import DecimalError


cdef inline int _text(object value, const char** s, Py_ssize_t* n) except -1:
    # The returned pointer borrows the str/bytes buffer: valid while `value` lives,
    # which is the caller's frame.
    if isinstance(value, str):
        s[0] = PyUnicode_AsUTF8AndSize(value, n)
    elif isinstance(value, bytes):
        s[0] = PyBytes_AS_STRING(value)
        n[0] = PyBytes_GET_SIZE(value)
    else:
        raise DecimalError(f"expected a decimal string, got {type(value).__name__} {value!r}")
    return 0


cdef class Instrument:
    """A tradable symbol with exact tick and lot sizes.

    ``tick_size`` and ``lot_size`` are decimal strings ("0.01", "0.00001", "0.5", "5").
    Prices are int64 counts of ticks and sizes int64 counts of lots; conversions are
    digit by digit with no float, and reject anything that is not a whole number of
    steps, is malformed, or overflows int64 (``DecimalError`` naming the value).

    >>> inst = Instrument("BTCUSDT", tick_size="0.01", lot_size="0.00001")
    >>> inst.price_to_ticks("61837.63"), inst.qty_to_lots("0.02")
    (6183763, 2000)
    >>> inst.ticks_to_price(6183763)
    '61837.63'
    """

    def __init__(self, str symbol, str tick_size, str lot_size, int instrument_id=0):
        if not symbol:
            raise ValueError("instrument symbol must not be empty")
        self.symbol = symbol
        dec_parse_step(tick_size, &self.price_decimals, &self.tick_units)
        dec_parse_step(lot_size, &self.qty_decimals, &self.lot_units)
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.instrument_id = instrument_id

    cpdef int64_t price_to_ticks(self, object price) except? -1:
        """Convert a decimal price string (or bytes) to an exact count of ticks. O(len)."""
        cdef const char* s
        cdef Py_ssize_t n
        cdef int64_t out = 0
        _text(price, &s, &n)
        cdef Status st = dec_to_steps(s, n, self.price_decimals, self.tick_units, &out)
        if st != ST_OK:
            dec_raise(st, price, f"{self.symbol} price (tick {self.tick_size})")
        return out

    cpdef int64_t qty_to_lots(self, object qty) except? -1:
        """Convert a decimal size string (or bytes) to an exact count of lots. O(len)."""
        cdef const char* s
        cdef Py_ssize_t n
        cdef int64_t out = 0
        _text(qty, &s, &n)
        cdef Status st = dec_to_steps(s, n, self.qty_decimals, self.lot_units, &out)
        if st != ST_OK:
            dec_raise(st, qty, f"{self.symbol} size (lot {self.lot_size})")
        return out

    cpdef str ticks_to_price(self, int64_t price_ticks, bint strip_zeros=False):
        """Format a tick count as a decimal string with the tick size's decimals
        (trailing zeros dropped when ``strip_zeros``)."""
        cdef char buf[64]
        cdef Py_ssize_t n = dec_format(price_ticks, self.price_decimals, self.tick_units, strip_zeros, buf)
        return buf[:n].decode("ascii")

    cpdef str lots_to_qty(self, int64_t qty_lots, bint strip_zeros=False):
        """Format a lot count as a decimal string with the lot size's decimals."""
        cdef char buf[64]
        cdef Py_ssize_t n = dec_format(qty_lots, self.qty_decimals, self.lot_units, strip_zeros, buf)
        return buf[:n].decode("ascii")

    def __repr__(self):
        return f"Instrument({self.symbol!r}, tick_size={self.tick_size!r}, lot_size={self.lot_size!r})"

    def __reduce__(self):
        return (Instrument, (self.symbol, self.tick_size, self.lot_size, self.instrument_id))
