"""Unit tests of the zero-copy JSON scanner (engine._core.jscan) through its Python face."""
from __future__ import annotations

import json

import pytest

from engine._core import jscan
from engine.errors import DecodeError


def reason_of(frame: bytes) -> tuple[str, int]:
    with pytest.raises(DecodeError) as info:
        jscan.scan_validate(frame)
    return info.value.reason, info.value.offset


VALID = [
    b"{}",
    b"[]",
    b'  {"a" : 1 ,\n\t"b":[true,false,null,-0.5e+3, 1E2, 0]}  ',
    b'"plain"',
    b'"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00"',
    '"utf-8 é ✓ 😀"'.encode(),
    b'{"nested":{"x":[[["deep"]]],"y":{}},"z":[{}]}',
    b"-0",
    b"123456789012345678901234567890",
]


@pytest.mark.parametrize("frame", VALID)
def test_valid_frames_pass_and_agree_with_json(frame: bytes) -> None:
    json.loads(frame.decode("utf-8"))
    jscan.scan_validate(frame)
    jscan.scan_validate(bytearray(frame))
    jscan.scan_validate(memoryview(frame))


@pytest.mark.parametrize(
    "frame, reason, offset",
    [
        (b"", "truncated input", 0),
        (b"   ", "truncated input", 3),
        (b'{"a":', "truncated input", 5),
        (b'{"a":1', "truncated input", 6),
        (b'"abc', "truncated input", 4),
        (b"[1,2", "truncated input", 4),
        (b"tru", "truncated input", 3),
        (b'{"a":1,}', "invalid JSON syntax", 7),
        (b"[1,]", "invalid JSON syntax", 3),
        (b"[1 2]", "invalid JSON syntax", 3),
        (b'{"a" 1}', "invalid JSON syntax", 5),
        (b"{a:1}", "invalid JSON syntax", 1),
        (b'{"a":[}', "invalid JSON syntax", 6),
        (b"trux", "invalid JSON syntax", 0),
        (b"@", "invalid JSON syntax", 0),
        (b"01", "trailing bytes after the value", 1),
        (b"-", "truncated input", 1),
        (b"1.", "truncated input", 2),
        (b"1.e5", "invalid number", 2),
        (b"1e", "truncated input", 2),
        (b'{"a":1} x', "trailing bytes after the value", 8),
        (b'"a\\x"', "invalid escape in string", 2),
        (b'"\\u12G4"', "invalid escape in string", 1),
        (b'"\\udc00"', "invalid escape in string", 1),
        (b'"\\ud800x"', "invalid escape in string", 1),
        (b'"a\nb"', "control character in string", 2),
        (b'"\xff"', "invalid UTF-8 in string", 1),
        (b'"\xc0\xaf"', "invalid UTF-8 in string", 1),        # overlong '/'
        (b'"\xed\xa0\x80"', "invalid UTF-8 in string", 1),    # encoded surrogate
        (b'"\xf4\x90\x80\x80"', "invalid UTF-8 in string", 1),  # above U+10FFFF
        (b'"\xe2\x82"', "invalid UTF-8 in string", 1),        # cut sequence then quote
        (b'{"k\xff":1}', "invalid UTF-8 in string", 3),       # keys are validated too
        (b"\xef\xbb\xbf{}", "invalid JSON syntax", 0),        # BOM is not JSON
    ],
)
def test_invalid_frames_report_reason_and_offset(frame: bytes, reason: str, offset: int) -> None:
    assert reason_of(frame) == (reason, offset)


def test_depth_limit() -> None:
    jscan.scan_validate(b"[" * 64 + b"]" * 64)
    assert reason_of(b"[" * 65 + b"]" * 65) == ("nesting deeper than 64", 64)
    with pytest.raises(DecodeError, match="nesting deeper than 3"):
        jscan.scan_validate(b"[[[[]]]]", max_depth=3)
    # Deeply nested garbage does not exhaust the C stack.
    assert reason_of(b"[" * 100_000)[0] == "nesting deeper than 64"


def test_find_key_any_order_whitespace_unknown_fields() -> None:
    frame = b' { "zz" : {"u": [1, {"u": 9}]} , "x\\"y": "q", "u" :\t-17 , "e": "depthUpdate" } '
    assert jscan.find_int(frame, "u") == -17
    assert jscan.find_string(frame, "e") == "depthUpdate"
    assert jscan.find_string(frame, 'x"y') == "q"
    with pytest.raises(KeyError):
        jscan.find_int(frame, "missing")
    # A key inside a nested value is not a key of the outer object.
    assert jscan.find_int(b'{"a":{"k":1},"k":2}', "k") == 2


def test_escaped_keys_match_decoded_text() -> None:
    assert jscan.find_int(b'{"\\u0062":5}', "b") == 5
    assert jscan.find_string(b'{"\\u00e9t\\u00e9":"\\ud83d\\ude00"}', "été") == "😀"


def test_nested_path() -> None:
    frame = b'{"stream":"btcusdt@depth","data":{"e":"depthUpdate","U":157,"u":160}}'
    assert jscan.find_int(frame, "data", "U") == 157
    assert jscan.find_string(frame, "stream") == "btcusdt@depth"


def test_int64_bounds_and_types() -> None:
    assert jscan.find_int(b'{"v":9223372036854775807}', "v") == 2**63 - 1
    assert jscan.find_int(b'{"v":-9223372036854775808}', "v") == -(2**63)
    with pytest.raises(DecodeError, match="overflows int64"):
        jscan.find_int(b'{"v":9223372036854775808}', "v")
    with pytest.raises(DecodeError, match="overflows int64"):
        jscan.find_int(b'{"v":-9223372036854775809}', "v")
    with pytest.raises(DecodeError, match="invalid number"):
        jscan.find_int(b'{"v":1.5}', "v")
    with pytest.raises(DecodeError, match="wrong JSON type"):
        jscan.find_int(b'{"v":"12"}', "v")
    assert jscan.find_int(b'{"v":"12"}', "v", allow_string=True) == 12
    with pytest.raises(DecodeError, match="invalid number"):
        jscan.find_int(b'{"v":"12a"}', "v", allow_string=True)
    with pytest.raises(DecodeError, match="wrong JSON type"):
        jscan.find_string(b'{"v":12}', "v")


def test_steps_from_strings_and_numbers() -> None:
    assert jscan.find_steps(b'{"p":"61837.63000000"}', "0.01", "p") == 6183763
    assert jscan.find_steps(b'{"p":61837.63}', "0.01", "p") == 6183763
    assert jscan.find_steps(b'{"p":"0.5"}', "0.5", "p") == 1
    with pytest.raises(DecodeError) as info:
        jscan.find_steps(b'{"p":"61837.631"}', "0.01", "p")
    assert info.value.reason == "p: bad decimal: not a whole number of steps '61837.631'"
    assert info.value.offset == 6
    with pytest.raises(DecodeError, match="exponent"):
        jscan.find_steps(b'{"p":1e3}', "0.01", "p")
    with pytest.raises(DecodeError, match="overflows int64"):
        jscan.find_steps(b'{"p":"99999999999999999999"}', "0.01", "p")
    with pytest.raises(DecodeError, match="not a decimal number"):
        jscan.find_steps(b'{"p":"12,5"}', "0.01", "p")
    with pytest.raises(DecodeError, match="no digits"):
        jscan.find_steps(b'{"p":""}', "0.01", "p")
    with pytest.raises(DecodeError, match="wrong JSON type"):
        jscan.find_steps(b'{"p":true}', "0.01", "p")
    with pytest.raises(DecodeError, match="wrong JSON type"):
        jscan.find_steps(b'{"p":"\\u0031"}', "0.01", "p")


def test_levels() -> None:
    frame = b'{"b":[["61837.63000000","3.78826000"], [ "1.00" , "0" ] ],"a":[]}'
    assert jscan.levels(frame, "0.01", "0.00001", "b") == [(6183763, 378826), (100, 0)]
    assert jscan.levels(frame, "0.01", "0.00001", "a") == []
    okx = b'{"asks":[["8476.98","415","0","13"]]}'
    assert jscan.levels(okx, "0.01", "1", "asks", allow_extra=True) == [(847698, 415)]
    with pytest.raises(DecodeError, match="field value not allowed"):
        jscan.levels(okx, "0.01", "1", "asks")
    with pytest.raises(DecodeError, match="field value not allowed"):
        jscan.levels(b'{"b":[["1.00"]]}', "0.01", "1", "b")
    with pytest.raises(DecodeError, match="negative"):
        jscan.levels(b'{"b":[["1.00","-1"]]}', "0.01", "1", "b")
    with pytest.raises(DecodeError, match="wrong JSON type"):
        jscan.levels(b'{"b":[{"p":"1"}]}', "0.01", "1", "b")


def test_borrowed_buffer_kinds_and_non_contiguous() -> None:
    frame = b'{"u":7}'
    assert jscan.find_int(memoryview(bytearray(frame)), "u") == 7
    with pytest.raises(BufferError):
        jscan.scan_validate(memoryview(b"[1, 2]")[::2])
    with pytest.raises(TypeError):
        jscan.scan_validate("not a buffer")  # type: ignore[arg-type]


@pytest.mark.parametrize("text, step, expected", [
    ("0.000", "0.01", 0),
    (".5", "0.5", 1),
    ("5.", "0.01", 500),
    ("007.10", "0.01", 710),
    ("61837.63000000", "0.01", 6183763),
    ("9223372036854775807", "1", 2**63 - 1),          # 19 digits: the general path
    ("922337203685477580.7", "0.1", 2**63 - 1),
    ("0.000000000000000001", "0.000000000000000001", 1),
])
def test_plain_decimal_fast_path_edges(text: str, step: str, expected: int) -> None:
    assert jscan.find_steps(b'{"p":"' + text.encode() + b'"}', step, "p") == expected


@pytest.mark.parametrize("text, reason", [
    ("9223372036854775808", "overflows int64"),
    ("18446744073709551616", "overflows int64"),
    (".", "no digits"),
    ("", "no digits"),
    ("1.0.0", "not a decimal number"),
    ("1.25", "not a whole number of steps"),
])
def test_plain_decimal_fast_path_rejects_like_dec_to_steps(text: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        jscan.find_steps(b'{"p":"' + text.encode() + b'"}', "0.5" if text == "1.25" else "1", "p")


def test_level_arrays_fast_and_general_paths_agree() -> None:
    """Compact levels take jscan's one-pass path; spaced ones the general path."""
    compact = b'{"b":[["61837.63000000","3.78826000"],["0.00000001","12345678.12345678"],["7","0"]],"x":"pad pad"}'
    spaced = compact.replace(b",", b" , ").replace(b"[", b"[ ")
    expected = [(6183763000000, 378826000), (1, 1234567812345678), (700000000, 0)]
    for frame in (compact, spaced):
        assert jscan.levels(frame, "0.00000001", "0.00000001", "b") == expected
