# jscan: a zero-copy, non-allocating JSON scanner for venue decoders.
#
# Every venue decoder builds on this C API. A decoder walks one frame with a
# JsonCursor and pulls out exactly the fields it needs: keys are matched in place,
# strings come back as spans into the frame (no copy when they hold no escapes),
# integers as int64, decimal strings (or bare JSON numbers) go straight to ticks/lots
# with decimals.dec_to_steps semantics (plain quoted decimals such as "61837.63000000"
# are parsed in the same pass as the scan, eight digits at a time; anything else goes
# through dec_to_steps itself; a fuzz test holds the two equal). Nothing here
# allocates or touches a Python object except the helpers marked "GIL" at the bottom.
#
# Memory and lifetime: the cursor BORROWS the frame's bytes. The pointer is valid only
# while the object that owns them is alive and unchanged -- for a picows frame that is
# only inside the on_ws_frame callback (its memoryview is recycled afterwards), for a
# bytes/bytearray it is the caller's frame. Never keep a cursor or a span past the call
# that received the buffer; copy out (js_span_to_str / js_unescape) what must outlive it.
#
# Conventions
# - Every scanning function is `noexcept nogil` and returns a JsonStatus. JS_OK is 0;
#   JS_END / JS_NOT_FOUND are normal outcomes; every value >= JS_ERROR is an error, and
#   the cursor then holds the error's byte offset in `err_pos` (and, for a bad decimal,
#   the decimals Status in `dec_status`). After an error the cursor position is
#   unspecified: stop decoding the frame and report it with js_raise().
# - Whitespace (space, \t, \n, \r) is skipped before every token, so callers never do.
# - Strings are validated as any JSON parser would: escapes (\" \\ \/ \b \f \n \r \t
#   \uXXXX with surrogate pairs), no raw control bytes, and well-formed UTF-8 (no
#   overlongs, no surrogates, nothing above U+10FFFF).
# - Nesting deeper than `max_depth` (default JS_DEFAULT_MAX_DEPTH) is JS_TOO_DEEP, so a
#   hostile frame cannot exhaust the C stack.
#
# Typical one-pass decode of {"e":"depthUpdate","U":1,"u":2,"b":[["1.0","2"]],...}:
#
#     cdef JsonCursor c
#     cdef JsonSpan key
#     cdef Py_ssize_t nmem = 0, n_levels = 0
#     js_init(&c, ptr, length)
#     st = js_enter_object(&c)
#     while st == JS_OK:
#         st = js_next_member(&c, &nmem, &key)      # cursor now at the member's value
#         if st != JS_OK: break                      # JS_END: '}' consumed
#         if js_span_eq(&c, &key, b"U", 1):  st = js_read_int64(&c, False, &first_id)
#         elif js_span_eq(&c, &key, b"b", 1):        # [[price, qty], ...] -> LevelUpdate rows
#             st = js_read_levels(&c, ..., SIDE_BID, scratch, capacity, &n_levels)
#         else: st = js_skip_value(&c)               # unknown fields are skipped
#     if st == JS_END: st = js_expect_end(&c)        # only whitespace may follow
#     if st != JS_OK: js_raise(&c, st, "binance depthUpdate")
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memcmp

from engine._core.types cimport LevelUpdate, Status, ST_OK
from engine._core.decimals cimport dec_to_steps

cdef enum:
    JS_DEFAULT_MAX_DEPTH = 64

cdef enum JsonStatus:
    JS_OK = 0
    JS_END = 1             # array/object exhausted; its closing bracket was consumed
    JS_NOT_FOUND = 2       # js_find_key: the object has no such key
    JS_ERROR = 16          # every status >= JS_ERROR is an error
    JS_TRUNCATED = 16      # input ended inside a value
    JS_SYNTAX = 17         # a byte that cannot appear here (garbage, missing ',' ':' ...)
    JS_WRONG_TYPE = 18     # a valid value of the wrong JSON type for the field
    JS_BAD_ESCAPE = 19     # malformed backslash escape or lone surrogate
    JS_BAD_UTF8 = 20       # invalid UTF-8 inside a string
    JS_CONTROL_CHAR = 21   # raw byte < 0x20 inside a string
    JS_TOO_DEEP = 22       # nesting beyond max_depth
    JS_OVERFLOW = 23       # integer does not fit int64
    JS_BAD_NUMBER = 24     # malformed JSON number, or not an integer where one is needed
    JS_DECIMAL = 25        # decimal string rejected by dec_to_steps; see dec_status
    JS_TRAILING = 26       # non-whitespace after the top-level value
    JS_TOO_LONG = 27       # output buffer too small (js_unescape)
    JS_BAD_FIELD = 28      # decoder-level: a field has a value the schema forbids
    JS_MISSING_FIELD = 29  # decoder-level: a required field is absent
    JS_DUPLICATE = 30      # decoder-level: a field the decoder reads appears twice

# Scanner state over one borrowed frame. Plain C struct: lives on the caller's stack.
ctypedef struct JsonCursor:
    const char* buf        # borrowed, see the lifetime note above
    Py_ssize_t len         # bytes in buf
    Py_ssize_t pos         # next byte to read
    Py_ssize_t err_pos     # byte offset of the error (valid when a call returned >= JS_ERROR)
    int32_t depth          # current nesting (objects/arrays entered and not yet closed)
    int32_t max_depth      # JS_TOO_DEEP beyond this
    int32_t dec_status     # engine._core.types.Status of the last JS_DECIMAL error

# A string (or number token) inside the frame: buf[start:start+len], quotes excluded.
# When has_escapes is false the bytes ARE the string's UTF-8 (zero copy); otherwise use
# js_unescape / js_span_eq / js_span_to_str, which decode the escapes.
ctypedef struct JsonSpan:
    Py_ssize_t start
    Py_ssize_t len
    bint has_escapes

# JSON value kinds returned by js_peek (the first byte of the next value).
cdef enum JsonKind:
    JK_NONE = 0            # end of input or a byte that starts no value
    JK_OBJECT = 1
    JK_ARRAY = 2
    JK_STRING = 3
    JK_NUMBER = 4
    JK_TRUE = 5
    JK_FALSE = 6
    JK_NULL = 7


# --- setup -------------------------------------------------------------------------
# Start scanning buf[0:n]. Never fails; errors surface on the first read.
cdef void js_init(JsonCursor* c, const char* buf, Py_ssize_t n) noexcept nogil

# Record an error found by the caller (decoder-level checks): sets c.err_pos = pos and
# returns st, so `return js_fail(&c, JS_BAD_FIELD, key.start)` reads naturally.
cdef JsonStatus js_fail(JsonCursor* c, JsonStatus st, Py_ssize_t pos) noexcept nogil

# --- structure ---------------------------------------------------------------------
# Kind of the next value (whitespace skipped; the cursor is left at its first byte).
cdef JsonKind js_peek(JsonCursor* c) noexcept nogil
# Consume '{' / '['. JS_WRONG_TYPE if the next value is something else.
cdef JsonStatus js_enter_object(JsonCursor* c) noexcept nogil
cdef JsonStatus js_enter_array(JsonCursor* c) noexcept nogil
# Object iteration. `count` is the caller's member counter, 0 before the first call
# (it decides whether a ',' is expected). On JS_OK, *key spans the member's key and the
# cursor sits at its value, which the caller MUST then read or js_skip_value. On JS_END
# the '}' was consumed.
cdef JsonStatus js_next_member(JsonCursor* c, Py_ssize_t* count, JsonSpan* key) noexcept nogil
# Array iteration, same protocol: JS_OK with the cursor at the element, JS_END after ']'.
cdef JsonStatus js_next_element(JsonCursor* c, Py_ssize_t* count) noexcept nogil
# Skip (and fully validate) any value, nested ones included. O(value length).
cdef JsonStatus js_skip_value(JsonCursor* c) noexcept nogil
# Position the cursor at the value of `key` inside the object whose '{' is at offset
# `obj_pos` (any field order; escaped keys compare by their decoded text). O(object
# size). JS_NOT_FOUND if absent (cursor after the object). For decoders that need
# several fields, one js_next_member pass is cheaper than repeated lookups.
cdef JsonStatus js_find_key(JsonCursor* c, Py_ssize_t obj_pos, const char* key,
                            Py_ssize_t key_len) noexcept nogil
# JS_OK if only whitespace remains, else JS_TRAILING.
cdef JsonStatus js_expect_end(JsonCursor* c) noexcept nogil

# --- scalars -----------------------------------------------------------------------
# A string: *out spans its raw bytes (quotes excluded). JS_WRONG_TYPE if not a string.
cdef JsonStatus js_read_string(JsonCursor* c, JsonSpan* out) noexcept nogil
# An integer number (no fraction/exponent) into int64; allow_string also accepts the
# same digits inside quotes ("123"), as some venues send ids. JS_OVERFLOW past int64.
cdef JsonStatus js_read_int64(JsonCursor* c, bint allow_string, int64_t* out) noexcept nogil
# true/false into *out. JS_WRONG_TYPE otherwise.
cdef JsonStatus js_read_bool(JsonCursor* c, bint* out) noexcept nogil
# If the next value is null, consume it and set *is_null; otherwise leave the cursor.
cdef JsonStatus js_read_null(JsonCursor* c, bint* is_null) noexcept nogil
# A decimal string "61837.63" or a bare JSON number 61837.63 converted exactly to a
# count of steps (decimals, step_units as in decimals.pxd). JS_DECIMAL (with
# c.dec_status set) when it is not a whole number of steps, overflows, has an exponent
# or is malformed; a string holding escapes is JS_WRONG_TYPE (no venue escapes digits).
cdef JsonStatus js_read_steps(JsonCursor* c, int32_t decimals, int64_t step_units,
                              int64_t* out) noexcept nogil
# A level array ["price", "qty"] -> ticks and lots. With allow_extra, further elements
# (e.g. OKX's ["px","sz","0","4"]) are validated and skipped; without it they are
# JS_BAD_FIELD. Negative values are JS_DECIMAL with dec_status ST_NEGATIVE.
cdef JsonStatus js_read_level(JsonCursor* c, int32_t price_decimals, int64_t tick_units,
                              int32_t qty_decimals, int64_t lot_units, bint allow_extra,
                              int64_t* price_ticks, int64_t* qty_lots) noexcept nogil

# A whole array of levels [[price, qty], ...] appended to out[*n:cap] as LevelUpdate
# rows with the given side (*n advanced per level). One call per array keeps the
# per-level work inside this module. JS_TOO_LONG (err_pos at the level) when more than
# cap - *n levels; otherwise the statuses of js_read_level. On error *n is unspecified
# and out[] may hold partial rows: the frame must be dropped whole.
cdef JsonStatus js_read_levels(JsonCursor* c, int32_t price_decimals, int64_t tick_units,
                               int32_t qty_decimals, int64_t lot_units, bint allow_extra,
                               int32_t side, LevelUpdate* out, Py_ssize_t cap,
                               Py_ssize_t* n) noexcept nogil

# --- spans -------------------------------------------------------------------------
# Does the span's decoded text equal lit[0:n]? memcmp when it has no escapes.
cdef bint js_span_eq(const JsonCursor* c, const JsonSpan* span, const char* lit,
                     Py_ssize_t n) noexcept nogil
# Decode the span's escapes into dst[0:cap] as UTF-8 and set *out_len. JS_TOO_LONG if
# cap is too small (the decoded text is never longer than span.len).
cdef JsonStatus js_unescape(const JsonCursor* c, const JsonSpan* span, char* dst,
                            Py_ssize_t cap, Py_ssize_t* out_len) noexcept nogil

# --- GIL helpers (cold path) -------------------------------------------------------
# A new str holding the span's decoded text (allocates; use outside hot loops).
cdef str js_span_to_str(const JsonCursor* c, const JsonSpan* span)
# Human reason for a status ("truncated input", "invalid UTF-8 in string", ...), with
# the decimals reason appended for JS_DECIMAL.
cdef str js_status_message(const JsonCursor* c, JsonStatus status)
# Raise engine.errors.DecodeError(f"{context}: {reason}", c.err_pos). Always raises.
cdef int js_raise(const JsonCursor* c, JsonStatus status, str context) except -1
# Acquire a read-only, C-contiguous buffer of `frame` (bytes, bytearray, memoryview or
# any buffer exporter) into *view and point *c at it. The caller MUST PyBuffer_Release
# the view (try/finally) and must not use the cursor after that. TypeError otherwise.
cdef int js_init_buffer(JsonCursor* c, object frame, Py_buffer* view) except -1


# --- inline decoder helpers ----------------------------------------------------------
# Compiled into each decoder's own loops (no call across modules on the common path).

cdef inline bint js_span_is(const JsonCursor* c, const JsonSpan* span, const char* lit,
                            Py_ssize_t n) noexcept nogil:
    """js_span_eq with the common case inline: a length check and memcmp; a span that
    holds escapes goes through js_span_eq's decoding comparison. O(n)."""
    if span.has_escapes:
        return js_span_eq(c, span, lit, n)
    return span.len == n and memcmp(c.buf + span.start, lit, n) == 0


cdef inline int js_match_word(const JsonCursor* c, const JsonSpan* span, const char** words,
                              const Py_ssize_t* lens, int n) noexcept nogil:
    """Index i of the word equal to the span's text (lens[i] == strlen(words[i])), -1
    when none is. O(n) comparisons: for the handful of keys or enum words of a schema."""
    cdef int i
    for i in range(n):
        if js_span_is(c, span, words[i], lens[i]):
            return i
    return -1


cdef inline JsonStatus js_claim(JsonCursor* c, const JsonSpan* key, unsigned int* seen,
                                unsigned int bit) noexcept nogil:
    """Mark the field `bit` of an object as read: JS_DUPLICATE (at the key) when *seen
    already has it, else sets it and returns JS_OK."""
    if seen[0] & bit:
        return js_fail(c, JS_DUPLICATE, key.start)
    seen[0] |= bit
    return JS_OK


cdef inline JsonStatus js_span_steps(JsonCursor* c, const JsonSpan* span, int32_t decimals,
                                     int64_t step_units, int64_t* out) noexcept nogil:
    """The text of a string span read earlier (js_read_string) as an exact count of
    steps, dec_to_steps semantics (a sign is allowed; callers check it). JS_DECIMAL at
    the span, with c.dec_status, when it does not convert (escaped text never does: a
    backslash is no digit). Writes *out only on JS_OK. O(span length)."""
    cdef Status ds = dec_to_steps(c.buf + span.start, span.len, decimals, step_units, out)
    if ds != ST_OK:
        c.dec_status = ds
        return js_fail(c, JS_DECIMAL, span.start)
    return JS_OK
