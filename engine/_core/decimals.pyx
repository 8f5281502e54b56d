"""Exact decimal conversion helpers (formatting and error reporting).

Parsing lives inline in ``decimals.pxd`` so that decoders compile it into their loops.
"""
from libc.stdint cimport int32_t, int64_t, uint64_t
from engine._core.types cimport Status, ST_OK, ST_EMPTY, ST_SYNTAX, ST_NOT_MULTIPLE, ST_OVERFLOW, ST_EXPONENT, ST_NEGATIVE

from engine.errors import DecimalError

cdef extern from *:
    """
    /* 128-bit product so that steps * step_units never overflows while formatting. */
    typedef unsigned __int128 engine_u128;
    """
    ctypedef unsigned long long engine_u128


cdef Py_ssize_t dec_format(int64_t steps, int32_t decimals, int64_t step_units,
                           bint strip_zeros, char* buf) noexcept nogil:
    """Write steps * step_units * 10**-decimals into buf (at least 64 bytes) and return
    its length. Keeps exactly `decimals` fraction digits unless strip_zeros, in which
    case trailing fraction zeros (and a bare '.') are dropped, as some venues print."""
    cdef char tmp[64]
    cdef Py_ssize_t n = 0, k = 0, j
    cdef bint negative = steps < 0
    # Magnitude without overflow even for INT64_MIN.
    cdef engine_u128 mag = <engine_u128>(<uint64_t>(-(steps + 1)) + 1) if negative else <engine_u128>steps
    mag = mag * <engine_u128>step_units
    while True:
        tmp[n] = <char>(c'0' + <int>(mag % 10))
        mag //= 10
        n += 1
        if mag == 0 and n > decimals:
            break
    # tmp holds digits least significant first; fraction is tmp[0:decimals].
    cdef Py_ssize_t first_frac = 0
    if strip_zeros:
        while first_frac < decimals and tmp[first_frac] == c'0':
            first_frac += 1
    if negative:
        buf[k] = c'-'
        k += 1
    j = n - 1
    while j >= decimals:
        buf[k] = tmp[j]
        k += 1
        j -= 1
    if decimals > first_frac:
        buf[k] = c'.'
        k += 1
        j = decimals - 1
        while j >= first_frac:
            buf[k] = tmp[j]
            k += 1
            j -= 1
    return k


cdef str dec_status_message(Status status):
    if status == ST_EMPTY:
        return "no digits"
    if status == ST_SYNTAX:
        return "not a decimal number"
    if status == ST_NOT_MULTIPLE:
        return "not a whole number of steps"
    if status == ST_OVERFLOW:
        return "overflows int64"
    if status == ST_EXPONENT:
        return "exponent notation is not accepted"
    if status == ST_NEGATIVE:
        return "negative where only non-negative values are legal"
    return f"status {<int>status}"


cdef int dec_raise(Status status, object value, str what) except -1:
    """Raise DecimalError naming the value, what it was meant to be, and why."""
    raise DecimalError(f"{what} {value!r}: {dec_status_message(status)}")


cdef int dec_parse_step(object step, int32_t* decimals, int64_t* step_units) except -1:
    """Parse a step size ("0.01", "0.5", "5") into (decimals, step_units), exactly."""
    if not isinstance(step, str):
        raise DecimalError(f"step size {step!r}: must be a decimal string such as '0.01'")
    cdef str text = <str>step
    cdef bytes raw = text.encode("ascii", "replace")
    cdef const char* s = raw
    cdef Py_ssize_t n = len(raw), dot = raw.find(b".")
    cdef int32_t d = 0
    if dot >= 0:
        # Trailing zeros of the step do not make it finer: "0.010" == "0.01".
        raw = raw.rstrip(b"0") if n > dot + 1 else raw
        if raw.endswith(b"."):
            raw = raw[:len(raw) - 1]
        dot = raw.find(b".")
        d = <int32_t>(len(raw) - dot - 1) if dot >= 0 else 0
        s = raw
        n = len(raw)
    if d > 18:
        raise DecimalError(f"step size {step!r}: more than 18 decimals")
    cdef int64_t units = 0
    cdef Status st = dec_to_steps(s, n, d, 1, &units)
    if st != ST_OK:
        dec_raise(st, step, "step size")
    if units <= 0:
        raise DecimalError(f"step size {step!r}: must be positive")
    decimals[0] = d
    step_units[0] = units
    return 0
