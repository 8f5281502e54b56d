"""Zero-copy JSON scanner used by every venue decoder (C API in ``jscan.pxd``).

The scanning functions never allocate and never touch a Python object; they return a
``JsonStatus`` and record the byte offset of any error in the cursor. The Python
functions at the bottom (``scan_validate``, ``find_string``, ``find_int``,
``find_steps``, ``levels``) expose the scanner for tests and tooling; they are not a
fast path.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.mem cimport PyMem_Malloc, PyMem_Free

from engine._core.types cimport Status, ST_OK, ST_NEGATIVE, LevelUpdate
from engine._core.decimals cimport dec_to_steps, dec_status_message

from engine.errors import DecodeError


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Eight digits at a time (SWAR) on little-endian targets with GCC/Clang builtins;
       elsewhere JSCAN_SWAR is 0 and the byte loops do all the work. */
    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define JSCAN_SWAR 1
    #else
    #define JSCAN_SWAR 0
    #endif
    /* Load 8 bytes (the caller guarantees they are inside the buffer) XOR '0': digit
       bytes become 0..9. Returns how many leading bytes are digits (0..8). A byte
       >= 0x8A carries into the next byte, but only after a non-digit, so the leading
       run is exact. */
    static inline int jscan_digit_run8(const unsigned char* p, uint64_t* x) {
    #if JSCAN_SWAR
        uint64_t v, m;
        memcpy(&v, p, 8);
        v ^= 0x3030303030303030ULL;
        m = ((v + 0x7676767676767676ULL) | v) & 0x8080808080808080ULL;
        *x = v;
        return m ? (__builtin_ctzll(m) >> 3) : 8;
    #else
        (void)p; *x = 0; return 0;
    #endif
    }
    /* Value of the first k (1..8) digit bytes of x (first byte most significant):
       shift them to the top so the rest act as leading zeros, then combine pairs,
       quads and halves with multiplies (the fast_float / simdjson method). */
    static inline uint64_t jscan_digits_value(uint64_t x, int k) {
        x <<= 8 * (8 - k);
        x = (x * 10) + (x >> 8);
        x = (((x & 0x000000FF000000FFULL) * 0x000F424000000064ULL)
             + (((x >> 16) & 0x000000FF000000FFULL) * 0x0000271000000001ULL)) >> 32;
        return x & 0xFFFFFFFFULL;
    }
    /* How many of the 8 bytes at p (inside the buffer) are '0', from the first. */
    static inline int jscan_zero_run8(const unsigned char* p) {
    #if JSCAN_SWAR
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= 0x3030303030303030ULL;
        return v ? (__builtin_ctzll(v) >> 3) : 8;
    #else
        (void)p; return 0;
    #endif
    }
    static const uint64_t jscan_pow10[9] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL};
    """
    bint JSCAN_SWAR
    int jscan_digit_run8(const uint8_t* p, uint64_t* x) nogil
    uint64_t jscan_digits_value(uint64_t x, int k) nogil
    int jscan_zero_run8(const uint8_t* p) nogil
    const uint64_t* jscan_pow10


cdef inline Py_ssize_t _take_digits(const uint8_t* b, Py_ssize_t p, Py_ssize_t stop, Py_ssize_t n,
                                    uint64_t* acc) noexcept nogil:
    # Accumulate the decimal digits at b[p:stop] into *acc (which may wrap: callers
    # bound the digit count) and return the index of the first byte not taken.
    # 8 bytes at a time while 8 bytes remain in the buffer, then byte by byte.
    cdef uint64_t x
    cdef int run
    cdef uint8_t d
    if JSCAN_SWAR:
        while p < stop and p + 8 <= n:
            run = jscan_digit_run8(b + p, &x)
            if run > stop - p:
                run = <int>(stop - p)
            if run == 0:
                return p
            acc[0] = acc[0] * jscan_pow10[run] + jscan_digits_value(x, run)
            p += run
            if run < 8:
                return p
    while p < stop:
        d = b[p] - 48
        if d > 9:
            break
        acc[0] = acc[0] * 10 + d
        p += 1
    return p


cdef inline Py_ssize_t _skip_zeros(const uint8_t* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    # Index of the first byte at or after p that is not '0'.
    cdef int run
    if JSCAN_SWAR:
        while p + 8 <= n:
            run = jscan_zero_run8(b + p)
            p += run
            if run < 8:
                return p
    while p < n and b[p] == 48:
        p += 1
    return p


cdef inline bint _is_ws(char ch) noexcept nogil:
    return ch == c' ' or ch == c'\n' or ch == c'\r' or ch == c'\t'


cdef inline Py_ssize_t _skip_ws(const JsonCursor* c) noexcept nogil:
    cdef Py_ssize_t p = c.pos
    while p < c.len and _is_ws(c.buf[p]):
        p += 1
    return p


cdef JsonStatus js_fail(JsonCursor* c, JsonStatus st, Py_ssize_t pos) noexcept nogil:
    c.err_pos = pos
    return st


cdef void js_init(JsonCursor* c, const char* buf, Py_ssize_t n) noexcept nogil:
    c.buf = buf
    c.len = n
    c.pos = 0
    c.err_pos = -1
    c.depth = 0
    c.max_depth = JS_DEFAULT_MAX_DEPTH
    c.dec_status = ST_OK


cdef JsonKind js_peek(JsonCursor* c) noexcept nogil:
    c.pos = _skip_ws(c)
    if c.pos >= c.len:
        return JK_NONE
    cdef char ch = c.buf[c.pos]
    if ch == c'{':
        return JK_OBJECT
    if ch == c'[':
        return JK_ARRAY
    if ch == c'"':
        return JK_STRING
    if ch == c'-' or (c'0' <= ch <= c'9'):
        return JK_NUMBER
    if ch == c't':
        return JK_TRUE
    if ch == c'f':
        return JK_FALSE
    if ch == c'n':
        return JK_NULL
    return JK_NONE


cdef inline JsonStatus _no_value(JsonCursor* c) noexcept nogil:
    # Called when a value was expected at c.pos and none starts there.
    if c.pos >= c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    return js_fail(c, JS_SYNTAX, c.pos)


cdef inline JsonStatus _wrong_type(JsonCursor* c) noexcept nogil:
    # The next bytes are not the expected type; tell garbage from a valid other type.
    if js_peek(c) == JK_NONE:
        return _no_value(c)
    return js_fail(c, JS_WRONG_TYPE, c.pos)


cdef inline JsonStatus _enter(JsonCursor* c, char open_ch) noexcept nogil:
    c.pos = _skip_ws(c)
    if c.pos >= c.len or c.buf[c.pos] != open_ch:
        return _wrong_type(c)
    if c.depth >= c.max_depth:
        return js_fail(c, JS_TOO_DEEP, c.pos)
    c.depth += 1
    c.pos += 1
    return JS_OK


cdef JsonStatus js_enter_object(JsonCursor* c) noexcept nogil:
    return _enter(c, c'{')


cdef JsonStatus js_enter_array(JsonCursor* c) noexcept nogil:
    return _enter(c, c'[')


# --- strings ---------------------------------------------------------------------

cdef inline int _hex(char ch) noexcept nogil:
    if c'0' <= ch <= c'9':
        return ch - c'0'
    if c'a' <= ch <= c'f':
        return ch - c'a' + 10
    if c'A' <= ch <= c'F':
        return ch - c'A' + 10
    return -1


cdef inline int _hex4(const char* s) noexcept nogil:
    cdef int a = _hex(s[0]), b = _hex(s[1]), d = _hex(s[2]), e = _hex(s[3])
    if a < 0 or b < 0 or d < 0 or e < 0:
        return -1
    return (a << 12) | (b << 8) | (d << 4) | e


cdef JsonStatus _scan_escape(JsonCursor* c, Py_ssize_t* pp) noexcept nogil:
    # *pp is at the backslash; on success it is moved past the whole escape (a
    # surrogate pair counts as one escape).
    cdef Py_ssize_t p = pp[0]
    cdef int cp, lo
    if p + 1 >= c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    cdef char e = c.buf[p + 1]
    if e == c'"' or e == c'\\' or e == c'/' or e == c'b' or e == c'f' or e == c'n' or e == c'r' or e == c't':
        pp[0] = p + 2
        return JS_OK
    if e != c'u':
        return js_fail(c, JS_BAD_ESCAPE, p)
    if p + 6 > c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    cp = _hex4(c.buf + p + 2)
    if cp < 0:
        return js_fail(c, JS_BAD_ESCAPE, p)
    if 0xDC00 <= cp <= 0xDFFF:
        return js_fail(c, JS_BAD_ESCAPE, p)          # lone low surrogate
    if 0xD800 <= cp <= 0xDBFF:
        # A high surrogate must be followed by an escaped low one.
        if (p + 6 < c.len and c.buf[p + 6] != c'\\') or (p + 7 < c.len and c.buf[p + 7] != c'u'):
            return js_fail(c, JS_BAD_ESCAPE, p)
        if p + 12 > c.len:
            return js_fail(c, JS_TRUNCATED, c.len)
        lo = _hex4(c.buf + p + 8)
        if lo < 0xDC00 or lo > 0xDFFF:
            return js_fail(c, JS_BAD_ESCAPE, p)
        pp[0] = p + 12
        return JS_OK
    pp[0] = p + 6
    return JS_OK


cdef JsonStatus _scan_utf8(JsonCursor* c, Py_ssize_t* pp) noexcept nogil:
    # *pp is at a lead byte >= 0x80; validates one code point (RFC 3629 table).
    cdef Py_ssize_t p = pp[0]
    cdef uint8_t b0 = <uint8_t>c.buf[p], b1
    cdef int need
    cdef uint8_t lo = 0x80, hi = 0xBF
    if 0xC2 <= b0 <= 0xDF:
        need = 1
    elif 0xE0 <= b0 <= 0xEF:
        need = 2
        if b0 == 0xE0:
            lo = 0xA0               # no overlongs
        elif b0 == 0xED:
            hi = 0x9F               # no UTF-16 surrogates
    elif 0xF0 <= b0 <= 0xF4:
        need = 3
        if b0 == 0xF0:
            lo = 0x90
        elif b0 == 0xF4:
            hi = 0x8F               # nothing above U+10FFFF
    else:
        return js_fail(c, JS_BAD_UTF8, p)
    if p + need >= c.len:
        # A sequence cut by the end of input: the closing quote is missing too.
        return js_fail(c, JS_TRUNCATED, c.len)
    b1 = <uint8_t>c.buf[p + 1]
    if b1 < lo or b1 > hi:
        return js_fail(c, JS_BAD_UTF8, p)
    cdef int k
    for k in range(2, need + 1):
        b1 = <uint8_t>c.buf[p + k]
        if b1 < 0x80 or b1 > 0xBF:
            return js_fail(c, JS_BAD_UTF8, p)
    pp[0] = p + need + 1
    return JS_OK


cdef JsonStatus _scan_string(JsonCursor* c, JsonSpan* out) noexcept nogil:
    # c.pos is at the opening quote.
    cdef Py_ssize_t p = c.pos + 1, n = c.len
    cdef const char* b = c.buf
    cdef uint8_t ch
    cdef JsonStatus st
    out.start = p
    out.has_escapes = False
    while True:
        # Plain ASCII runs are the common case: one compare chain per byte.
        while p < n:
            ch = <uint8_t>b[p]
            if ch == c'"' or ch == c'\\' or ch < 0x20 or ch >= 0x80:
                break
            p += 1
        if p >= n:
            return js_fail(c, JS_TRUNCATED, n)
        if ch == c'"':
            out.len = p - out.start
            c.pos = p + 1
            return JS_OK
        if ch == c'\\':
            out.has_escapes = True
            st = _scan_escape(c, &p)
        elif ch < 0x20:
            return js_fail(c, JS_CONTROL_CHAR, p)
        else:
            st = _scan_utf8(c, &p)
        if st != JS_OK:
            return st


cdef JsonStatus js_read_string(JsonCursor* c, JsonSpan* out) noexcept nogil:
    c.pos = _skip_ws(c)
    if c.pos >= c.len or c.buf[c.pos] != c'"':
        return _wrong_type(c)
    return _scan_string(c, out)


cdef Py_ssize_t _decode_one(const char* s, Py_ssize_t i, char* out, int* nout) noexcept nogil:
    # Decode one (already validated) character of a string body at s[i]; write its
    # UTF-8 bytes to out[0:*nout] (at most 4) and return the index after it.
    cdef uint32_t cp
    cdef char e
    if s[i] != c'\\':
        out[0] = s[i]
        nout[0] = 1
        return i + 1
    e = s[i + 1]
    if e != c'u':
        if e == c'b':
            out[0] = c'\b'
        elif e == c'f':
            out[0] = c'\f'
        elif e == c'n':
            out[0] = c'\n'
        elif e == c'r':
            out[0] = c'\r'
        elif e == c't':
            out[0] = c'\t'
        else:
            out[0] = e              # " \ /
        nout[0] = 1
        return i + 2
    cp = <uint32_t>_hex4(s + i + 2)
    i += 6
    if 0xD800 <= cp <= 0xDBFF:
        cp = 0x10000 + ((cp - 0xD800) << 10) + (<uint32_t>_hex4(s + i + 2) - 0xDC00)
        i += 6
    if cp < 0x80:
        out[0] = <char>cp
        nout[0] = 1
    elif cp < 0x800:
        out[0] = <char>(0xC0 | (cp >> 6))
        out[1] = <char>(0x80 | (cp & 0x3F))
        nout[0] = 2
    elif cp < 0x10000:
        out[0] = <char>(0xE0 | (cp >> 12))
        out[1] = <char>(0x80 | ((cp >> 6) & 0x3F))
        out[2] = <char>(0x80 | (cp & 0x3F))
        nout[0] = 3
    else:
        out[0] = <char>(0xF0 | (cp >> 18))
        out[1] = <char>(0x80 | ((cp >> 12) & 0x3F))
        out[2] = <char>(0x80 | ((cp >> 6) & 0x3F))
        out[3] = <char>(0x80 | (cp & 0x3F))
        nout[0] = 4
    return i


cdef bint js_span_eq(const JsonCursor* c, const JsonSpan* span, const char* lit,
                     Py_ssize_t n) noexcept nogil:
    cdef const char* s = c.buf + span.start
    if not span.has_escapes:
        return span.len == n and memcmp(s, lit, n) == 0
    cdef Py_ssize_t i = 0, j = 0
    cdef char tmp[4]
    cdef int k, nout = 0
    while i < span.len:
        i = _decode_one(s, i, tmp, &nout)
        if j + nout > n:
            return False
        for k in range(nout):
            if tmp[k] != lit[j + k]:
                return False
        j += nout
    return j == n


cdef JsonStatus js_unescape(const JsonCursor* c, const JsonSpan* span, char* dst,
                            Py_ssize_t cap, Py_ssize_t* out_len) noexcept nogil:
    cdef const char* s = c.buf + span.start
    cdef Py_ssize_t i = 0, j = 0
    cdef char tmp[4]
    cdef int k, nout = 0
    while i < span.len:
        i = _decode_one(s, i, tmp, &nout)
        if j + nout > cap:
            return JS_TOO_LONG
        for k in range(nout):
            dst[j + k] = tmp[k]
        j += nout
    out_len[0] = j
    return JS_OK


# --- numbers and literals --------------------------------------------------------

cdef JsonStatus _scan_number(JsonCursor* c, bint* is_int) noexcept nogil:
    # JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    # c.pos is at its first byte; on success c.pos is just past it.
    cdef Py_ssize_t p = c.pos, n = c.len
    cdef const char* b = c.buf
    is_int[0] = True
    if p < n and b[p] == c'-':
        p += 1
    if p >= n:
        return js_fail(c, JS_TRUNCATED, n)
    if b[p] == c'0':
        p += 1
    elif c'1' <= b[p] <= c'9':
        while p < n and c'0' <= b[p] <= c'9':
            p += 1
    else:
        return js_fail(c, JS_BAD_NUMBER, p)
    if p < n and b[p] == c'.':
        is_int[0] = False
        p += 1
        if p >= n:
            return js_fail(c, JS_TRUNCATED, n)
        if not (c'0' <= b[p] <= c'9'):
            return js_fail(c, JS_BAD_NUMBER, p)
        while p < n and c'0' <= b[p] <= c'9':
            p += 1
    if p < n and (b[p] == c'e' or b[p] == c'E'):
        is_int[0] = False
        p += 1
        if p < n and (b[p] == c'+' or b[p] == c'-'):
            p += 1
        if p >= n:
            return js_fail(c, JS_TRUNCATED, n)
        if not (c'0' <= b[p] <= c'9'):
            return js_fail(c, JS_BAD_NUMBER, p)
        while p < n and c'0' <= b[p] <= c'9':
            p += 1
    c.pos = p
    return JS_OK


cdef JsonStatus _parse_int(JsonCursor* c, Py_ssize_t start, Py_ssize_t end,
                           int64_t* out) noexcept nogil:
    # Digits with an optional leading '-', validated by the caller's grammar or here.
    cdef Py_ssize_t p = start
    cdef bint negative = False
    cdef uint64_t acc = 0, limit
    cdef uint64_t d
    if p < end and c.buf[p] == c'-':
        negative = True
        p += 1
    if p >= end:
        return js_fail(c, JS_BAD_NUMBER, start)
    limit = (<uint64_t>1 << 63) if negative else ((<uint64_t>1 << 63) - 1)
    while p < end:
        if not (c'0' <= c.buf[p] <= c'9'):
            return js_fail(c, JS_BAD_NUMBER, p)
        d = <uint64_t>(c.buf[p] - c'0')
        if acc > (limit - d) // 10:
            return js_fail(c, JS_OVERFLOW, start)
        acc = acc * 10 + d
        p += 1
    if negative:
        out[0] = <int64_t>(0 - acc)
    else:
        out[0] = <int64_t>acc
    return JS_OK


cdef JsonStatus js_read_int64(JsonCursor* c, bint allow_string, int64_t* out) noexcept nogil:
    cdef bint is_int
    cdef JsonSpan span
    cdef Py_ssize_t start
    cdef JsonStatus st
    c.pos = _skip_ws(c)
    if c.pos >= c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    start = c.pos
    cdef char ch = c.buf[start]
    if ch == c'-' or (c'0' <= ch <= c'9'):
        st = _scan_number(c, &is_int)
        if st != JS_OK:
            return st
        if not is_int:
            return js_fail(c, JS_BAD_NUMBER, start)
        return _parse_int(c, start, c.pos, out)
    if allow_string and ch == c'"':
        st = _scan_string(c, &span)
        if st != JS_OK:
            return st
        if span.has_escapes:
            return js_fail(c, JS_BAD_NUMBER, span.start)
        return _parse_int(c, span.start, span.start + span.len, out)
    return _wrong_type(c)


cdef JsonStatus _literal(JsonCursor* c, const char* word, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t avail = c.len - c.pos
    cdef Py_ssize_t m = n if avail >= n else avail
    if memcmp(c.buf + c.pos, word, m) != 0:
        return js_fail(c, JS_SYNTAX, c.pos)
    if m < n:
        return js_fail(c, JS_TRUNCATED, c.len)
    c.pos += n
    return JS_OK


cdef JsonStatus js_read_bool(JsonCursor* c, bint* out) noexcept nogil:
    cdef JsonKind k = js_peek(c)
    if k == JK_TRUE:
        out[0] = True
        return _literal(c, b"true", 4)
    if k == JK_FALSE:
        out[0] = False
        return _literal(c, b"false", 5)
    return _wrong_type(c)


cdef JsonStatus js_read_null(JsonCursor* c, bint* is_null) noexcept nogil:
    if js_peek(c) == JK_NULL:
        is_null[0] = True
        return _literal(c, b"null", 4)
    is_null[0] = False
    return JS_OK


cdef inline bint _plain_decimal(JsonCursor* c, int32_t decimals, int64_t step_units,
                                int64_t* out) noexcept nogil:
    # Fast path for the common quoted decimal: "61837.63000000" -- unsigned ASCII digits
    # with at most one '.', at most 18 significant digits (so uint64 cannot overflow),
    # no nonzero digit past `decimals`, a whole number of steps. It parses while it
    # scans (one pass instead of string scan + dec_to_steps). Anything else returns
    # False with the cursor untouched, and the caller takes the general path
    # (_scan_string + dec_to_steps), which then also reports the precise error; so
    # every accepted value equals what dec_to_steps gives (tests/test_jscan*.py check).
    cdef const uint8_t* b = <const uint8_t*>c.buf
    cdef Py_ssize_t start = c.pos + 1, p = c.pos + 1, n = c.len, stop
    cdef uint64_t acc = 0
    cdef Py_ssize_t digits, frac = 0, frac_start
    p = _take_digits(b, p, n, n, &acc)           # integer part
    digits = p - start
    if p < n and b[p] == 46:                     # '.'
        p += 1
        frac_start = p
        stop = p + decimals if p + decimals < n else n
        p = _take_digits(b, p, stop, n, &acc)
        frac = p - frac_start
        p = _skip_zeros(b, p, n)                 # digits past `decimals` must be '0'
        if digits == 0 and frac == 0 and b[p - 1] != 48:
            return False                         # no digit at all ("." or "")
    elif digits == 0:
        return False
    if p >= n or b[p] != 34:                     # anything else before the '"'
        return False
    # Leading zeros make `digits` overcount, which only sends rare values the slow way.
    if digits + decimals > 18:
        return False
    while frac < decimals:
        acc *= 10
        frac += 1
    if step_units != 1:
        if acc % <uint64_t>step_units != 0:
            return False
        acc //= <uint64_t>step_units
    out[0] = <int64_t>acc
    c.pos = p + 1
    return True


cdef JsonStatus js_read_steps(JsonCursor* c, int32_t decimals, int64_t step_units,
                              int64_t* out) noexcept nogil:
    cdef JsonSpan span
    cdef JsonStatus st
    cdef Status ds
    cdef bint is_int
    c.pos = _skip_ws(c)
    if c.pos >= c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    cdef char ch = c.buf[c.pos]
    if ch == c'"':
        if _plain_decimal(c, decimals, step_units, out):
            return JS_OK
        st = _scan_string(c, &span)
        if st != JS_OK:
            return st
        if span.has_escapes:
            return js_fail(c, JS_WRONG_TYPE, span.start)
    elif ch == c'-' or (c'0' <= ch <= c'9'):
        span.start = c.pos
        st = _scan_number(c, &is_int)
        if st != JS_OK:
            return st
        span.len = c.pos - span.start
    else:
        return _wrong_type(c)
    ds = dec_to_steps(c.buf + span.start, span.len, decimals, step_units, out)
    if ds != ST_OK:
        c.dec_status = ds
        return js_fail(c, JS_DECIMAL, span.start)
    return JS_OK


# --- structure -------------------------------------------------------------------

cdef inline JsonStatus _next_item(JsonCursor* c, Py_ssize_t count, char close, Py_ssize_t* at) noexcept nogil:
    """The part object members and array elements share: skip whitespace, end at
    ``close``, and after the first item require a comma. On JS_OK, ``at`` is the
    first byte of the next item (a closing bracket there is a trailing comma)."""
    cdef Py_ssize_t p = _skip_ws(c)
    if p >= c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    cdef char ch = c.buf[p]
    if ch == close:
        c.pos = p + 1
        c.depth -= 1
        return JS_END
    if count > 0:
        if ch != c',':
            return js_fail(c, JS_SYNTAX, p)
        c.pos = p + 1
        p = _skip_ws(c)
        if p >= c.len:
            return js_fail(c, JS_TRUNCATED, c.len)
        if c.buf[p] == close:
            return js_fail(c, JS_SYNTAX, p)     # trailing comma
    at[0] = p
    return JS_OK


cdef JsonStatus js_next_member(JsonCursor* c, Py_ssize_t* count, JsonSpan* key) noexcept nogil:
    cdef Py_ssize_t p
    cdef JsonStatus st = _next_item(c, count[0], c'}', &p)
    if st != JS_OK:
        return st
    if c.buf[p] != c'"':
        return js_fail(c, JS_SYNTAX, p)
    c.pos = p
    st = _scan_string(c, key)
    if st != JS_OK:
        return st
    p = _skip_ws(c)
    if p >= c.len:
        return js_fail(c, JS_TRUNCATED, c.len)
    if c.buf[p] != c':':
        return js_fail(c, JS_SYNTAX, p)
    c.pos = p + 1
    count[0] += 1
    return JS_OK


cdef JsonStatus js_next_element(JsonCursor* c, Py_ssize_t* count) noexcept nogil:
    cdef Py_ssize_t p
    cdef JsonStatus st = _next_item(c, count[0], c']', &p)
    if st != JS_OK:
        return st
    c.pos = p
    count[0] += 1
    return JS_OK


cdef JsonStatus js_skip_value(JsonCursor* c) noexcept nogil:
    # Recursion depth is bounded by c.max_depth (enter_* refuse to go deeper).
    cdef JsonSpan span
    cdef Py_ssize_t count = 0
    cdef JsonStatus st
    cdef bint is_int
    cdef JsonKind k = js_peek(c)
    if k == JK_STRING:
        return _scan_string(c, &span)
    if k == JK_NUMBER:
        return _scan_number(c, &is_int)
    if k == JK_OBJECT:
        st = js_enter_object(c)
        while st == JS_OK:
            st = js_next_member(c, &count, &span)
            if st == JS_OK:
                st = js_skip_value(c)
        return JS_OK if st == JS_END else st
    if k == JK_ARRAY:
        st = js_enter_array(c)
        while st == JS_OK:
            st = js_next_element(c, &count)
            if st == JS_OK:
                st = js_skip_value(c)
        return JS_OK if st == JS_END else st
    if k == JK_TRUE:
        return _literal(c, b"true", 4)
    if k == JK_FALSE:
        return _literal(c, b"false", 5)
    if k == JK_NULL:
        return _literal(c, b"null", 4)
    return _no_value(c)


cdef JsonStatus js_find_key(JsonCursor* c, Py_ssize_t obj_pos, const char* key,
                            Py_ssize_t key_len) noexcept nogil:
    # Depth is restored on return so repeated lookups in one object do not accumulate.
    cdef int32_t depth0 = c.depth
    cdef Py_ssize_t count = 0
    cdef JsonSpan span
    cdef JsonStatus st
    c.pos = obj_pos
    st = js_enter_object(c)
    while st == JS_OK:
        st = js_next_member(c, &count, &span)
        if st != JS_OK:
            break
        if js_span_eq(c, &span, key, key_len):
            c.depth = depth0
            return JS_OK
        st = js_skip_value(c)
    c.depth = depth0
    return JS_NOT_FOUND if st == JS_END else st


cdef JsonStatus js_expect_end(JsonCursor* c) noexcept nogil:
    c.pos = _skip_ws(c)
    if c.pos < c.len:
        return js_fail(c, JS_TRAILING, c.pos)
    return JS_OK


cdef JsonStatus js_read_level(JsonCursor* c, int32_t price_decimals, int64_t tick_units,
                              int32_t qty_decimals, int64_t lot_units, bint allow_extra,
                              int64_t* price_ticks, int64_t* qty_lots) noexcept nogil:
    cdef Py_ssize_t count = 0, start = _skip_ws(c)
    cdef JsonStatus st
    # Fast path for the compact form venues send: ["61837.63000000","3.78826000"].
    # Any deviation rewinds to `start` and takes the general path below.
    if start + 1 < c.len and c.buf[start] == c'[' and c.buf[start + 1] == c'"' and c.depth < c.max_depth:
        c.pos = start + 1
        if (_plain_decimal(c, price_decimals, tick_units, price_ticks) and c.pos + 1 < c.len
                and c.buf[c.pos] == c',' and c.buf[c.pos + 1] == c'"'):
            c.pos += 1
            if _plain_decimal(c, qty_decimals, lot_units, qty_lots) and c.pos < c.len and c.buf[c.pos] == c']':
                c.pos += 1
                return JS_OK
        c.pos = start
    st = js_enter_array(c)
    if st != JS_OK:
        return st
    st = js_next_element(c, &count)
    if st == JS_OK:
        st = js_read_steps(c, price_decimals, tick_units, price_ticks)
        if st == JS_OK and price_ticks[0] < 0:
            c.dec_status = ST_NEGATIVE
            return js_fail(c, JS_DECIMAL, start + 1)
    if st == JS_OK:
        st = js_next_element(c, &count)
        if st == JS_OK:
            st = js_read_steps(c, qty_decimals, lot_units, qty_lots)
            if st == JS_OK and qty_lots[0] < 0:
                c.dec_status = ST_NEGATIVE
                return js_fail(c, JS_DECIMAL, start + 1)
    if st == JS_END:
        return js_fail(c, JS_BAD_FIELD, start)       # fewer than two elements
    while st == JS_OK:
        st = js_next_element(c, &count)
        if st == JS_OK:
            if not allow_extra:
                return js_fail(c, JS_BAD_FIELD, c.pos)
            st = js_skip_value(c)
    return JS_OK if st == JS_END else st


cdef JsonStatus js_read_levels(JsonCursor* c, int32_t price_decimals, int64_t tick_units,
                               int32_t qty_decimals, int64_t lot_units, bint allow_extra,
                               int32_t side, LevelUpdate* out, Py_ssize_t cap,
                               Py_ssize_t* n) noexcept nogil:
    cdef Py_ssize_t count = 0
    cdef LevelUpdate* lv
    cdef JsonStatus st = js_enter_array(c)
    while st == JS_OK:
        st = js_next_element(c, &count)
        if st != JS_OK:
            break
        if n[0] >= cap:
            return js_fail(c, JS_TOO_LONG, c.pos)
        lv = &out[n[0]]
        st = js_read_level(c, price_decimals, tick_units, qty_decimals, lot_units, allow_extra,
                           &lv.price_ticks, &lv.qty_lots)
        lv.side = side
        n[0] += 1
    return JS_OK if st == JS_END else st


# --- GIL helpers -----------------------------------------------------------------

cdef str js_span_to_str(const JsonCursor* c, const JsonSpan* span):
    cdef Py_ssize_t n = 0
    cdef char* tmp
    if not span.has_escapes:
        return PyUnicode_DecodeUTF8(c.buf + span.start, span.len, NULL)
    # Decoded text is never longer than its escaped form.
    tmp = <char*>PyMem_Malloc(span.len + 1)
    if tmp == NULL:
        raise MemoryError()
    try:
        js_unescape(c, span, tmp, span.len + 1, &n)
        return PyUnicode_DecodeUTF8(tmp, n, "surrogatepass")
    finally:
        PyMem_Free(tmp)


cdef str js_status_message(const JsonCursor* c, JsonStatus status):
    if status == JS_OK:
        return "ok"
    if status == JS_END:
        return "end of container"
    if status == JS_NOT_FOUND:
        return "key not found"
    if status == JS_TRUNCATED:
        return "truncated input"
    if status == JS_SYNTAX:
        return "invalid JSON syntax"
    if status == JS_WRONG_TYPE:
        return "wrong JSON type"
    if status == JS_BAD_ESCAPE:
        return "invalid escape in string"
    if status == JS_BAD_UTF8:
        return "invalid UTF-8 in string"
    if status == JS_CONTROL_CHAR:
        return "control character in string"
    if status == JS_TOO_DEEP:
        return f"nesting deeper than {c.max_depth}"
    if status == JS_OVERFLOW:
        return "integer overflows int64"
    if status == JS_BAD_NUMBER:
        return "invalid number"
    if status == JS_DECIMAL:
        return f"bad decimal: {dec_status_message(<Status>c.dec_status)}"
    if status == JS_TRAILING:
        return "trailing bytes after the value"
    if status == JS_TOO_LONG:
        return "string too long for the output buffer"
    if status == JS_BAD_FIELD:
        return "field value not allowed here"
    if status == JS_MISSING_FIELD:
        return "required field missing"
    if status == JS_DUPLICATE:
        return "duplicate field"
    return f"status {<int>status}"


cdef int js_raise(const JsonCursor* c, JsonStatus status, str context) except -1:
    reason = js_status_message(c, status)
    if status == JS_DECIMAL and 0 <= c.err_pos < c.len:
        # Name the offending value: the bytes of the token (bounded, printable).
        end = c.err_pos
        while end < c.len and end - c.err_pos < 40 and c.buf[end] not in b'",]} \r\n\t':
            end += 1
        value = c.buf[c.err_pos:end].decode("utf-8", "replace")
        reason = f"{reason} {value!r}"
    raise DecodeError(f"{context}: {reason}" if context else reason, c.err_pos)


cdef int js_init_buffer(JsonCursor* c, object frame, Py_buffer* view) except -1:
    PyObject_GetBuffer(frame, view, PyBUF_SIMPLE)
    js_init(c, <const char*>view.buf, view.len)
    return 0


# --- Python face (tests and tooling; allocates, not a fast path) ------------------

def scan_validate(frame, int max_depth=JS_DEFAULT_MAX_DEPTH):
    """Validate that ``frame`` (bytes, bytearray or memoryview) holds exactly one JSON
    value. O(len). Raises DecodeError(reason, offset) on the first error."""
    cdef JsonCursor c
    cdef Py_buffer view
    cdef JsonStatus st
    js_init_buffer(&c, frame, &view)
    try:
        c.max_depth = max_depth
        st = js_skip_value(&c)
        if st == JS_OK:
            st = js_expect_end(&c)
        if st != JS_OK:
            js_raise(&c, st, "")
    finally:
        PyBuffer_Release(&view)


cdef int _walk_or_raise(JsonCursor* c, tuple path) except -1:
    # Follow object keys (str) from the top-level value; the cursor ends at the value.
    cdef Py_ssize_t obj_pos
    cdef JsonStatus st
    cdef bytes k
    for item in path:
        k = (<str>item).encode("utf-8")
        if js_peek(c) != JK_OBJECT:
            js_raise(c, _wrong_type(c), ".".join(path))
        obj_pos = c.pos
        st = js_find_key(c, obj_pos, k, len(k))
        if st == JS_NOT_FOUND:
            raise KeyError(".".join(path))
        if st != JS_OK:
            js_raise(c, st, ".".join(path))
    return 0


cdef enum:
    _READ_STRING = 0
    _READ_INT = 1
    _READ_STEPS = 2
    _READ_LEVELS = 3


cdef object _read_at(object frame, tuple path, int what, bint flag=False,
                     str tick_size="1", str lot_size="1"):
    # The one body behind the Python helpers below: borrow the buffer, walk the key
    # path, read one value of kind `what` (flag: allow_string / allow_extra).
    from engine._core.instrument import Instrument
    cdef JsonCursor c
    cdef Py_buffer view
    cdef JsonSpan span
    cdef int64_t a = 0, b = 0
    cdef Py_ssize_t count = 0
    cdef JsonStatus st = JS_OK
    inst = Instrument("X", tick_size, lot_size)
    cdef int32_t pd = inst.price_decimals, qd = inst.qty_decimals
    cdef int64_t tu = inst.tick_units, lu = inst.lot_units
    out = None
    js_init_buffer(&c, frame, &view)
    try:
        _walk_or_raise(&c, path)
        if what == _READ_STRING:
            st = js_read_string(&c, &span)
            if st == JS_OK:
                out = js_span_to_str(&c, &span)
        elif what == _READ_INT:
            st = js_read_int64(&c, flag, &a)
            out = a
        elif what == _READ_STEPS:
            st = js_read_steps(&c, pd, tu, &a)
            out = a
        else:
            out = []
            st = js_enter_array(&c)
            while st == JS_OK:
                st = js_next_element(&c, &count)
                if st == JS_OK:
                    st = js_read_level(&c, pd, tu, qd, lu, flag, &a, &b)
                    if st == JS_OK:
                        out.append((a, b))
            if st == JS_END:
                st = JS_OK
        if st != JS_OK:
            js_raise(&c, st, ".".join(path))
        return out
    finally:
        PyBuffer_Release(&view)


def find_string(frame, *path):
    """Return the string at the object key path ``path`` (str keys), unescaped.
    KeyError if a key is absent; DecodeError on malformed input or a non-string."""
    return _read_at(frame, path, _READ_STRING)


def find_int(frame, *path, bint allow_string=False):
    """Return the int64 at the object key path ``path``. KeyError / DecodeError."""
    return _read_at(frame, path, _READ_INT, allow_string)


def find_steps(frame, str step, *path):
    """Return the decimal string or number at ``path`` as an exact count of ``step``
    ("0.01" -> ticks). KeyError / DecodeError (reason names the value)."""
    return _read_at(frame, path, _READ_STEPS, False, step, step)


def levels(frame, str tick_size, str lot_size, *path, bint allow_extra=False):
    """Return the array of [price, qty] levels at ``path`` as a list of (ticks, lots)
    tuples. O(len). DecodeError on anything malformed."""
    return _read_at(frame, path, _READ_LEVELS, allow_extra, tick_size, lot_size)
