# Exact decimal-string <-> integer conversion, digit by digit, no float anywhere.
#
# A step ("tick size" or "lot size") is a decimal string such as "0.01", "0.5" or "5".
# It is held as (decimals, step_units): the step equals step_units * 10**-decimals,
# e.g. "0.25" -> (2, 25), "5" -> (0, 5), "0.00001" -> (5, 1).
# A value is converted to a count of steps: "61837.63" with (2, 1) -> 6183763.
#
# These are inline so that every decoder gets them compiled into its own hot loop.
from libc.stdint cimport int32_t, int64_t, uint64_t
from engine._core.types cimport Status, ST_OK, ST_EMPTY, ST_SYNTAX, ST_NOT_MULTIPLE, ST_OVERFLOW, ST_EXPONENT

# Largest magnitude before a *10 + digit step could overflow uint64.
cdef enum:
    DEC_MAX_DIGITS_SCALE = 19

cdef inline Status dec_to_steps(const char* s, Py_ssize_t n, int32_t decimals,
                                int64_t step_units, int64_t* out) noexcept nogil:
    """Parse s[0:n] (optional sign, digits, optional '.' and digits) into a whole
    number of steps. Digits past `decimals` must be zeros. Writes *out only on ST_OK."""
    cdef Py_ssize_t i = 0
    cdef bint negative = False
    cdef uint64_t acc = 0
    cdef int32_t frac_digits = 0
    cdef int digits = 0
    cdef unsigned char c
    cdef uint64_t limit = <uint64_t>0x7FFFFFFFFFFFFFFF  # |steps| * step_units bound, refined below
    if n <= 0:
        return ST_EMPTY
    c = <unsigned char>s[0]
    if c == c'-' or c == c'+':
        negative = c == c'-'
        i = 1
    # Integer part.
    while i < n:
        c = <unsigned char>s[i]
        if c < c'0' or c > c'9':
            break
        if acc > (<uint64_t>0xFFFFFFFFFFFFFFFF - (c - c'0')) // 10:
            return ST_OVERFLOW
        acc = acc * 10 + (c - c'0')
        digits += 1
        i += 1
    # Fraction part: the first `decimals` digits count, the rest must be zeros.
    if i < n and s[i] == c'.':
        i += 1
        while i < n:
            c = <unsigned char>s[i]
            if c < c'0' or c > c'9':
                break
            if frac_digits < decimals:
                if acc > (<uint64_t>0xFFFFFFFFFFFFFFFF - (c - c'0')) // 10:
                    return ST_OVERFLOW
                acc = acc * 10 + (c - c'0')
                frac_digits += 1
            elif c != c'0':
                return ST_NOT_MULTIPLE
            digits += 1
            i += 1
    if digits == 0:
        return ST_EMPTY if i == n else ST_SYNTAX
    if i < n:
        c = <unsigned char>s[i]
        return ST_EXPONENT if (c == c'e' or c == c'E') else ST_SYNTAX
    # Scale up to `decimals` fraction digits when the string had fewer.
    while frac_digits < decimals:
        if acc > <uint64_t>0xFFFFFFFFFFFFFFFF // 10:
            return ST_OVERFLOW
        acc *= 10
        frac_digits += 1
    if step_units != 1:
        if acc % <uint64_t>step_units != 0:
            return ST_NOT_MULTIPLE
        acc //= <uint64_t>step_units
    if acc > limit:
        return ST_OVERFLOW
    out[0] = -<int64_t>acc if negative else <int64_t>acc
    return ST_OK


cdef Py_ssize_t dec_format(int64_t steps, int32_t decimals, int64_t step_units,
                           bint strip_zeros, char* buf) noexcept nogil
cdef str dec_status_message(Status status)
cdef int dec_raise(Status status, object value, str what) except -1
cdef int dec_parse_step(object step, int32_t* decimals, int64_t* step_units) except -1
