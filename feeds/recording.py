"""Recorded frame files: readers for replay and a writer for our own recordings.

Formats read (``read_frames`` detects which):

- **lines** (hftbacktest's and ours): one frame a line, ``<receive_ns> <payload>``,
  gzip, xz or plain (detected from the magic bytes, for every format). Our writer adds one escape hatch: a payload that holds a newline or
  carriage return (a Centrifugo frame carries several JSON objects separated by ``\\n``)
  or is binary is written as ``<receive_ns>+b64 <base64>``.
- **cryptofeed** raw capture: ``<url> <-> <ts>`` (connection opened, skipped),
  ``<url> <- <ts>: <json>`` (frame sent, skipped), ``<ts>: <json>`` (frame received),
  ``<url> -> <ts>: <body>`` (REST capture; yielded with its URL as ``channel``).
  Timestamps are decimal seconds, converted to ns exactly (no float). Blank lines are
  skipped. ``read_cryptofeed`` merges the ``.http.`` companion file of a ``.ws.`` file
  in timestamp order when it exists.

Everything here is a tool around the hot path: it allocates a ``bytes`` per frame.
"""
from __future__ import annotations

import base64
import gzip
import heapq
import lzma
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Callable, Iterator, cast

__all__ = [
    "RecordedFrame",
    "RecordingWriter",
    "detect_format",
    "read_cryptofeed",
    "read_frames",
    "read_lines",
    "seconds_to_ns",
]

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_B64_MARK = b"+b64"


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One recorded frame: when it was received (ns since the epoch), its bytes, and
    for REST captures the request URL (``channel``; empty for WebSocket frames)."""

    recv_ns: int
    payload: bytes
    channel: str = ""


def _open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """Open plain, gzip or xz files alike (detected from the magic bytes)."""
    fh: BinaryIO = open(path, "rb")
    magic = fh.read(6)
    if magic[:2] == _GZIP_MAGIC:
        fh.close()
        return cast(BinaryIO, gzip.open(path, "rb"))
    if magic == _XZ_MAGIC:
        fh.close()
        return cast(BinaryIO, lzma.open(path, "rb"))
    fh.seek(0)
    return fh


def seconds_to_ns(text: str | bytes) -> int:
    """Decimal seconds ("1633998512.0633569") to integer ns, exactly (digits beyond
    the ninth decimal are truncated). ValueError on anything else."""
    raw = text.decode("ascii") if isinstance(text, bytes) else text
    whole, _, frac = raw.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"timestamp {raw!r}: expected decimal seconds such as '1633998512.06'")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def read_lines(path: str | os.PathLike[str]) -> Iterator[RecordedFrame]:
    """Frames of a ``<receive_ns> <payload>`` file (gzip or plain), in file order.
    ValueError naming the line number on a malformed line. O(file)."""
    with _open_binary(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            head, sep, payload = line.partition(b" ")
            if head.endswith(_B64_MARK):
                head = head[: -len(_B64_MARK)]
                payload = base64.b64decode(payload, validate=True)
            if not sep or not head.isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<receive_ns> <payload>'")
            yield RecordedFrame(int(head), payload)


_CF_RECEIVED = re.compile(rb"^(\d+(?:\.\d+)?): ")
_CF_REST = re.compile(rb"^(\S+) -> (\d+(?:\.\d+)?): ")
_CF_SENT = re.compile(rb"^\S+ <- \d+(?:\.\d+)?: ")
_CF_OPEN = re.compile(rb"^\S+ <-> \d+(?:\.\d+)?$")


def _read_cryptofeed_one(path: str | os.PathLike[str]) -> Iterator[RecordedFrame]:
    with _open_binary(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if not line or _CF_OPEN.match(line) or _CF_SENT.match(line):
                continue
            m = _CF_RECEIVED.match(line)
            if m:
                yield RecordedFrame(seconds_to_ns(m.group(1)), line[m.end():])
                continue
            m = _CF_REST.match(line)
            if m:
                yield RecordedFrame(seconds_to_ns(m.group(2)), line[m.end():], m.group(1).decode("utf-8"))
                continue
            raise ValueError(f"{path}:{lineno}: not a cryptofeed capture line")


def read_cryptofeed(path: str | os.PathLike[str], *, with_http: bool = True) -> Iterator[RecordedFrame]:
    """Frames of a cryptofeed capture, merged with its ``.http.`` companion (REST
    snapshots) by receive time when ``with_http`` and the companion exists. O(file)."""
    p = Path(path)
    sources = [_read_cryptofeed_one(p)]
    if with_http:
        m = re.match(r"^(.*)\.ws\.\d+\.(\d+)((?:\.gz|\.xz)?)$", p.name)
        if m:
            companion = p.with_name(f"{m.group(1)}.http.0.{m.group(2)}{m.group(3)}")
            if companion.exists():
                sources.append(_read_cryptofeed_one(companion))
    if len(sources) == 1:
        yield from sources[0]
    else:
        # Stable for equal timestamps: the WebSocket frame first.
        yield from heapq.merge(*sources, key=lambda f: f.recv_ns)


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"lines"`` or ``"cryptofeed"``, from the first non-blank line."""
    with _open_binary(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            head = line.split(b" ", 1)[0]
            if head.endswith(_B64_MARK):
                head = head[: -len(_B64_MARK)]
            if head.isdigit():
                return "lines"
            return "cryptofeed"
    return "lines"


def read_frames(path: str | os.PathLike[str]) -> Iterator[RecordedFrame]:
    """Frames of any supported recording, format detected from its content."""
    if detect_format(path) == "cryptofeed":
        return read_cryptofeed(path)
    return read_lines(path)


class RecordingWriter:
    """Append frames to a ``<receive_ns> <payload>`` file (gzip when the name ends in
    ``.gz``), readable by ``read_lines`` and, for plain JSON frames, by hftbacktest.

    An existing file is appended to, never truncated: a feed that restarts (or a
    program run again with the same ``record_path``) adds to its recording. A gzip file
    then holds one gzip member per run, which ``gzip`` (and ``read_lines``) reads as one
    stream. A plain file whose last line was cut short (a crash mid-write) gets a
    newline first so the new frames stay readable lines (the cut line itself stays
    malformed). ``append=False`` starts the file afresh.

    ``scrub_secrets`` (default True): every registered ``feeds.session.Secret`` value,
    raw or percent-encoded, is replaced by ``***`` in each recorded payload, so a
    recording can be shared: venues echo credentials in frames they send (an
    ``apiKey`` field in private events), and replay never needs them. Only received
    frames are recorded; what the client sends (connect commands with tokens) never is.
    A frame is written as received when it holds no secret; ``False`` records raw bytes.

    Use as a context manager; ``write`` copies the payload out of the (possibly
    borrowed) buffer before returning, so a picows memoryview may be passed directly.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = True, scrub_secrets: bool = True) -> None:
        self.path = Path(path)
        mode = "ab" if append else "wb"
        self._scrub: Callable[[bytes], bytes] | None = None
        if scrub_secrets:
            import engine  # noqa: F401  (feeds.session must be imported through the engine package)
            from feeds.session import mask_secrets_bytes
            self._scrub = mask_secrets_bytes
        if self.path.suffix == ".gz":
            self._fh: BinaryIO = cast(BinaryIO, gzip.open(self.path, mode))
        else:
            self._fh = cast(BinaryIO, open(self.path, mode))
            if append and self._fh.tell() > 0:
                with open(self.path, "rb") as tail:
                    tail.seek(-1, os.SEEK_END)
                    if tail.read(1) != b"\n":
                        self._fh.write(b"\n")
        self.frames = 0

    def write(self, recv_ns: int, payload: bytes | bytearray | memoryview) -> None:
        """Record one frame received at ``recv_ns`` (int ns), secrets scrubbed unless
        disabled. O(len(payload) * registered secret forms)."""
        if recv_ns < 0:
            raise ValueError(f"recv_ns {recv_ns}: must be >= 0")
        data = bytes(payload)
        if self._scrub is not None:
            data = self._scrub(data)
        if b"\n" in data or b"\r" in data or not _is_utf8(data):
            self._fh.write(b"%d%s %s\n" % (recv_ns, _B64_MARK, base64.b64encode(data)))
        else:
            self._fh.write(b"%d %s\n" % (recv_ns, data))
        self.frames += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _is_utf8(data: bytes) -> bool:
    if data.isascii():           # the common case, checked without a copy
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
