"""``python -m engine replay`` and the recording readers/writer (feeds.recording)."""
from __future__ import annotations

import gzip
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest

from engine.replay import infer_steps, main
from feeds.recording import (
    RecordedFrame,
    RecordingWriter,
    detect_format,
    read_cryptofeed,
    read_frames,
    read_lines,
    seconds_to_ns,
)

DATA = Path(__file__).parent / "data" / "binance"
USDM = DATA / "hftbacktest_usdm_btcusdt_20240808_first6000.txt.xz"
REQUIRED = {"frames", "depth_applied", "dropped_stale", "gaps", "errors", "bbo_checks",
            "bbo_mismatches", "crossed", "best_bid", "best_ask", "seconds"}
ROOT = Path(__file__).resolve().parents[1]


def test_cli_json_has_the_required_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(USDM), "--venue", "binance-usdm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert REQUIRED <= out.keys()
    assert out["frames"] == 6000 and out["gaps"] == 0 and out["errors"] == 0
    assert out["bbo_mismatches"] == 0 and out["bbo_checks"] > 40
    assert isinstance(out["best_bid"], str) and isinstance(out["best_ask"], str)
    assert out["best_bid"] < out["best_ask"]
    assert out["seconds"] > 0


def test_cli_given_sizes_and_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(USDM), "--venue", "binance-usdm", "--tick-size", "0.01", "--lot-size", "0.001"]) == 0
    text = capsys.readouterr().out
    assert "tick_size        0.01" in text and "bbo_mismatches   0" in text


def test_cli_too_coarse_sizes_count_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(USDM), "--venue", "binance-usdm", "--lot-size", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] > 0          # the snapshot itself is rejected: nothing to sync to
    assert out["depth_applied"] == 0


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_snapshot = tmp_path / "diffs.txt"
    no_snapshot.write_bytes(b'1 {"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[],"a":[]}\n')
    assert main([str(no_snapshot), "--venue", "binance-spot"]) == 2
    assert "no depth snapshot" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--venue", "binance-spot"]) == 2
    with pytest.raises(SystemExit):
        main([str(USDM), "--venue", "kraken"])


def test_python_dash_m_engine_replay() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", "replay", str(USDM), "--venue", "binance-usdm", "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(proc.stdout)["gaps"] == 0


def test_infer_steps_rule() -> None:
    snap = b'{"lastUpdateId":1,"bids":[["61837.63000000","3.78826000"],["61800.10000000","1.00000000"]],"asks":[]}'
    assert infer_steps(snap) == ("0.01", "0.00000001")
    assert infer_steps(b'{"bids":[["100","5"]],"asks":[]}') == ("1", "1")
    with pytest.raises(ValueError):
        infer_steps(b'{"lastUpdateId":1,"bids":[],"asks":[]}')


# --- recording formats ----------------------------------------------------------------

def test_writer_round_trip_plain_gzip_and_escapes(tmp_path: Path) -> None:
    frames = [
        (1723161253937085768, b'{"stream":"x","data":{"u":1}}'),
        (2, b'{"push":{"channel":"a"}}\n{"push":{"channel":"b"}}'),   # Centrifugo batch
        (3, b"\x00\xffbinary"),
        (4, bytearray(b"[1]")),
        (5, memoryview(b"{}")),
    ]
    for name in ("rec.txt", "rec.txt.gz"):
        path = tmp_path / name
        with RecordingWriter(path) as w:
            for ns, payload in frames:
                w.write(ns, payload)
        assert w.frames == len(frames)
        got = list(read_lines(path))
        assert got == [RecordedFrame(ns, bytes(p)) for ns, p in frames]
        assert detect_format(path) == "lines"
    assert (tmp_path / "rec.txt").read_bytes().splitlines()[0] == b'1723161253937085768 {"stream":"x","data":{"u":1}}'
    with gzip.open(tmp_path / "rec.txt.gz") as fh:
        assert fh.readline().startswith(b"1723161253937085768 ")
    with pytest.raises(ValueError):
        RecordingWriter(tmp_path / "x").write(-1, b"{}")


def test_read_lines_rejects_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"1 {}\n\nnot-a-number {}\n")
    with pytest.raises(ValueError, match="bad.txt:3"):
        list(read_lines(bad))


def test_seconds_to_ns_is_exact() -> None:
    assert seconds_to_ns("1633998512.0633569") == 1633998512063356900
    assert seconds_to_ns(b"1633998511") == 1633998511000000000
    assert seconds_to_ns("1.1234567891") == 1123456789
    with pytest.raises(ValueError):
        seconds_to_ns("1e9")


def test_cryptofeed_capture_format(tmp_path: Path) -> None:
    ws = tmp_path / "BINANCE.ws.1.0"
    ws.write_bytes(
        b"wss://stream.binance.com:9443/stream?streams=a <-> 1633998511.159679\n"
        b"wss://stream.binance.com:9443/stream <- 1633998511.2: {\"method\":\"SUBSCRIBE\"}\n"
        b"\n"
        b"1633998512.0633569: {\"stream\":\"a@depth\",\"data\":{}}\n"
        b"1633998513.5: {\"stream\":\"a@bookTicker\",\"data\":{}}\n")
    http = tmp_path / "BINANCE.http.0.0"
    http.write_bytes(b"https://api.binance.com/api/v3/depth?symbol=A&limit=1000 -> 1633998512.32: {\"lastUpdateId\":1}\n")
    assert detect_format(ws) == "cryptofeed"
    got = list(read_frames(ws))
    assert [f.recv_ns for f in got] == [1633998512063356900, 1633998512320000000, 1633998513500000000]
    assert got[1].channel.endswith("symbol=A&limit=1000") and got[1].payload == b'{"lastUpdateId":1}'
    assert [f.channel for f in read_cryptofeed(ws, with_http=False)] == ["", ""]
    (tmp_path / "junk.0").write_bytes(b"1.0 not a capture\n")
    with pytest.raises(ValueError, match="junk.0:1"):
        list(read_cryptofeed(tmp_path / "junk.0"))


def test_copied_cryptofeed_files_read_with_their_companion() -> None:
    frames = list(read_frames(DATA / "cryptofeed" / "BINANCE.ws.1.0.xz"))
    assert sum(1 for f in frames if f.channel) == 4
    assert all(a.recv_ns <= b.recv_ns for a, b in zip(frames, frames[1:]))


def test_xz_and_gzip_detected_by_magic(tmp_path: Path) -> None:
    line = b'7 {"a":1}\n'
    (tmp_path / "a.bin").write_bytes(lzma.compress(line))
    (tmp_path / "b.bin").write_bytes(gzip.compress(line))
    for name in ("a.bin", "b.bin"):
        assert list(read_frames(tmp_path / name)) == [RecordedFrame(7, b'{"a":1}')]


def test_cli_coinm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """COIN-M: contract sizes (integers), the pu chain, a bookTicker check."""
    def diff(U: int, u: int, pu: int, bids: list[list[str]], asks: list[list[str]]) -> bytes:
        return json.dumps({"stream": "btcusd_perp@depth@0ms", "data": {
            "e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSD_PERP", "ps": "BTCUSD",
            "U": U, "u": u, "pu": pu, "b": bids, "a": asks}}).encode()

    lines = [
        diff(5, 9, 4, [["61800.1", "3"]], []),
        b'{"lastUpdateId":9,"E":1,"T":1,"bids":[["61800.1","3"],["61799.0","10"]],"asks":[["61800.2","7"]]}',
        diff(10, 12, 9, [["61800.1", "0"]], [["61800.3", "1"]]),
        json.dumps({"stream": "btcusd_perp@bookTicker", "data": {
            "e": "bookTicker", "u": 12, "s": "BTCUSD_PERP", "ps": "BTCUSD",
            "b": "61799.0", "B": "10", "a": "61800.2", "A": "7", "T": 1, "E": 1}}).encode(),
    ]
    path = tmp_path / "coinm.txt"
    path.write_bytes(b"".join(b"%d %s\n" % (i, line) for i, line in enumerate(lines)))
    assert main([str(path), "--venue", "binance-coinm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["symbol"], out["tick_size"], out["lot_size"]) == ("BTCUSD_PERP", "0.1", "1")
    assert (out["depth_applied"], out["gaps"], out["bbo_checks"], out["bbo_mismatches"]) == (2, 0, 1, 0)
    assert (out["best_bid"], out["best_ask"]) == ("61799.0", "61800.2")


def test_writer_appends_never_truncates(tmp_path: Path) -> None:
    for name in ("app.txt", "app.txt.gz"):
        path = tmp_path / name
        for run in range(3):
            with RecordingWriter(path) as w:
                w.write(run * 10 + 1, b'{"run":%d}' % run)
                w.write(run * 10 + 2, b"a\nb")
        assert [(f.recv_ns, f.payload) for f in read_lines(path)] == [
            (r * 10 + k, p) for r in range(3) for k, p in ((1, b'{"run":%d}' % r), (2, b"a\nb"))]
        with RecordingWriter(path, append=False) as w:
            w.write(7, b"{}")
        assert list(read_lines(path)) == [RecordedFrame(7, b"{}")]
    # A plain recording cut mid-line (crash) stays readable up to the cut; new lines follow it.
    cut = tmp_path / "cut.txt"
    cut.write_bytes(b'1 {"a":1}\n2 {"b":')
    with RecordingWriter(cut) as w:
        w.write(3, b'{"c":3}')
    assert cut.read_bytes() == b'1 {"a":1}\n2 {"b":\n3 {"c":3}\n'


def test_writer_scrubs_registered_secrets(tmp_path: Path) -> None:
    from urllib.parse import quote_plus

    from feeds.session import Secret
    key = "scrub+me/key-0042"
    Secret(key)
    frames = [b'{"apiKey":"%s","px":"1.5"}' % key.encode(), b"ws://h/?k=%s" % quote_plus(key).encode(),
              b'{"clean":true}']
    path = tmp_path / "s.txt"
    with RecordingWriter(path) as w:
        for i, f in enumerate(frames):
            w.write(i, f)
    assert [f.payload for f in read_lines(path)] == [b'{"apiKey":"***","px":"1.5"}', b"ws://h/?k=***",
                                                     b'{"clean":true}']
    assert key.encode() not in path.read_bytes()
    with RecordingWriter(path, append=False, scrub_secrets=False) as w:
        w.write(0, frames[0])
    assert [f.payload for f in read_lines(path)] == [frames[0]]
