# Inline helpers shared by the venue decoders (cadenza, prices, realtime, stream,
# botplatform). A .pxd only: every function is inline and compiled into the decoder
# that cimports it, so nothing here is a module at run time. JSON-scanning primitives
# live in engine/_core/jscan.pxd; these are the decoder-level pieces the venues share.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_RawRealloc
from libc.stdint cimport int64_t
from libc.string cimport strlen

from engine._core.jscan cimport (
    JsonCursor, JsonSpan, JsonStatus, JS_OK, JS_BAD_FIELD,
    js_fail, js_read_string, js_span_is, js_span_to_str, js_raise,
)


cdef inline int scratch_reserve(void** buf, Py_ssize_t* cap, Py_ssize_t n,
                                size_t item_size) noexcept nogil:
    """Grow the scratch array *buf (room for *cap items of item_size bytes) to exactly
    n items when n > *cap; 0 on success (also when it was big enough), -1 when out of
    memory (*buf and *cap then unchanged). Ownership: *buf is PyMem_Raw memory owned by
    the caller, who frees it with PyMem_RawFree; the old contents are kept (realloc)."""
    cdef void* grown
    if n <= cap[0]:
        return 0
    grown = PyMem_RawRealloc(buf[0], <size_t>n * item_size)
    if grown == NULL:
        return -1
    buf[0] = grown
    cap[0] = n
    return 0


cdef inline int scratch_grow(void** buf, Py_ssize_t* cap, Py_ssize_t n, size_t item_size) except -1:
    """scratch_reserve for GIL-holding callers: MemoryError when out of memory."""
    if scratch_reserve(buf, cap, n, item_size) < 0:
        raise MemoryError()
    return 0


cdef inline str read_text(JsonCursor* c, JsonStatus* st):
    """The string value at the cursor as a new str (decoded, escapes resolved), with
    *st = JS_OK; for a non-string, None with the js_read_string status in *st. Cold
    paths only (allocates)."""
    cdef JsonSpan span
    st[0] = js_read_string(c, &span)
    if st[0] != JS_OK:
        return None
    return js_span_to_str(c, &span)


cdef inline void fill_lens(const char** words, Py_ssize_t* lens, int n) noexcept:
    """lens[i] = strlen(words[i]) for a static word table (module init), so that
    js_match_word compares lengths before bytes."""
    cdef int i
    for i in range(n):
        lens[i] = <Py_ssize_t>strlen(words[i])


cdef inline int span_is_bytes(const JsonCursor* c, const JsonSpan* span, bytes name) except -1:
    """1 if the span's text is the UTF-8 `name`, else 0: the linear symbol / channel /
    market scans. TypeError for None (an object whose __init__ never ran), as a
    <const char*> cast of None raises."""
    if name is None:
        raise TypeError("expected bytes, NoneType found")
    return js_span_is(c, span, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))


cdef inline int taker_side(const JsonCursor* c, const JsonSpan* span) noexcept nogil:
    """A trade's taker side word: "buy" -> +1, "sell" -> -1, anything else 0."""
    if js_span_is(c, span, b"buy", 3):
        return 1
    if js_span_is(c, span, b"sell", 4):
        return -1
    return 0


cdef inline JsonStatus read_taker_side(JsonCursor* c, int64_t* side) noexcept nogil:
    """The string value at the cursor as a taker side (+1 buy, -1 sell): JS_BAD_FIELD at
    the string for any other word, the js_read_string status for a non-string."""
    cdef JsonSpan span
    cdef JsonStatus st = js_read_string(c, &span)
    if st != JS_OK:
        return st
    side[0] = taker_side(c, &span)
    if side[0] == 0:
        return js_fail(c, JS_BAD_FIELD, span.start)
    return JS_OK


cdef inline int check_field(const JsonCursor* c, JsonStatus st, str venue, str subject,
                            str field) except -1:
    """Raise DecodeError("{venue} {subject} {field}: reason", offset) when st is not
    JS_OK (js_raise); the context text is built only then, so hot paths pass their
    parts without formatting anything."""
    if st != JS_OK:
        js_raise(c, st, f"{venue} {subject} {field}")
    return 0
