"""Trace readers against the real traces shipped in modelbank.data and hand-written edge cases."""

from __future__ import annotations

import gzip
import json
import statistics
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelbank.data import AZURE_TRACE, MOONCAKE_TRACE, PACKAGED_DATA_DIR, require
from modelbank.errors import InvalidInput
from modelbank.traces.readers import (
    AZURE_CODE_TRACE_STATS,
    MOONCAKE_BLOCK_TOKENS,
    MOONCAKE_DEFAULT_START,
    TraceFormat,
    TraceFormatError,
    TraceRequest,
    detect_format,
    read_trace,
    synthetic_azure_trace,
)

AZURE_FILE = AZURE_TRACE
MOONCAKE_FILE = MOONCAKE_TRACE


def _data_file(name: str) -> Path:
    """A real trace shipped with the package (gzipped): never absent, so never skipped."""
    return require(PACKAGED_DATA_DIR, name)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _fails(path: Path, line: int | None, fragment: str, fmt: TraceFormat | None = None) -> None:
    with pytest.raises(TraceFormatError) as caught:
        read_trace(path, fmt)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(caught.value).startswith(where), str(caught.value)
    assert fragment in str(caught.value)
    assert caught.value.code == "trace_invalid"
    assert caught.value.context == {"path": str(path), "line": line}


# --- real files ---------------------------------------------------------------------------


def test_azure_real_file_totals_and_first_timestamp() -> None:
    path = _data_file(AZURE_FILE)
    assert detect_format(path) is TraceFormat.AZURE
    requests = read_trace(path)
    assert len(requests) == 8_819
    assert sum(r.input_tokens for r in requests) == 18_059_974
    assert sum(r.output_tokens for r in requests) == 245_896
    assert requests[0].occurred_at == datetime(2023, 11, 16, 18, 17, 3, 979_960, tzinfo=UTC)
    assert requests[-1].occurred_at == datetime(2023, 11, 16, 19, 14, 19, 928_016, tzinfo=UTC)
    assert all(r.cached_input_tokens == 0 and r.user is None and r.model is None for r in requests)


def test_azure_real_file_start_shifts_whole_trace() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    requests = read_trace(_data_file(AZURE_FILE), TraceFormat.AZURE, start=start)
    assert requests[0].occurred_at == start
    assert requests[-1].occurred_at - start == timedelta(
        minutes=57, seconds=15, microseconds=948_056
    )


def test_mooncake_real_file_totals_and_cache_fraction() -> None:
    path = _data_file(MOONCAKE_FILE)
    assert detect_format(path) is TraceFormat.MOONCAKE
    requests = read_trace(path)
    assert len(requests) == 12_031
    assert sum(r.input_tokens for r in requests) == 144_793_823
    assert sum(r.output_tokens for r in requests) == 4_122_048
    assert requests[0].occurred_at == MOONCAKE_DEFAULT_START
    assert requests[-1].occurred_at == MOONCAKE_DEFAULT_START + timedelta(milliseconds=3_536_999)

    # Independent recomputation from the raw JSON: which block ids repeat an earlier one.
    seen: set[int] = set()
    repeated_blocks = total_blocks = cached_tokens = 0
    with gzip.open(path, "rt", encoding="utf-8") as lines:  # the shipped copy is gzipped
        for raw in lines:
            record = json.loads(raw)
            ids, length = record["hash_ids"], record["input_length"]
            for k, block in enumerate(ids):
                total_blocks += 1
                if block in seen:
                    repeated_blocks += 1
                    size = 512 if k < len(ids) - 1 else length - 512 * (len(ids) - 1)
                    cached_tokens += size
                seen.add(block)
    assert round(100 * repeated_blocks / total_blocks, 1) == 36.6  # the data's README
    assert sum(r.cached_input_tokens for r in requests) == cached_tokens
    assert all(0 <= r.cached_input_tokens <= r.input_tokens for r in requests)


# --- Azure format, hand-written -----------------------------------------------------------

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


def test_azure_crlf_no_trailing_newline_and_seven_digit_truncation(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.csv",
        f"{AZURE_HEADER}\r\n2023-11-16 18:17:03.9999999,10,2\r\n2023-11-16 18:17:04.0000001,0,0",
    )
    first, second = read_trace(path)
    assert first == TraceRequest(datetime(2023, 11, 16, 18, 17, 3, 999_999, tzinfo=UTC), 10, 2)
    assert second.occurred_at == datetime(2023, 11, 16, 18, 17, 4, tzinfo=UTC)
    assert (second.input_tokens, second.output_tokens) == (0, 0)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("2023-11-16 18:17:03.9799600,-5,2", "ContextTokens must not be negative"),
        ("2023-11-16 18:17:03.9799600,5,2.5", "GeneratedTokens must be a whole number"),
        ("2023-11-16 18:17:03.9799600,1_000,2", "ContextTokens must be a whole number"),
        ("2023-11-16 18:17:03.9799600,,2", "ContextTokens must be a whole number"),
        ("2023-11-16 25:17:03.9799600,5,2", "bad timestamp"),
        ("yesterday,5,2", "bad timestamp"),
        ("2023-11-16 18:17:03.9799600,5", "expected 3 fields, got 2"),
    ],
)
def test_azure_bad_rows_name_file_and_line(tmp_path: Path, row: str, fragment: str) -> None:
    good = "2023-11-16 18:17:03.0000000,1,1"
    path = _write(tmp_path, "a.csv", f"{AZURE_HEADER}\r\n{good}\r\n{row}")
    _fails(path, 3, fragment, TraceFormat.AZURE)


def test_azure_wrong_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens\r\n2023-11-16 18:17:03,1\r\n")
    _fails(path, 1, "expected header", TraceFormat.AZURE)


# --- Mooncake format, hand-written --------------------------------------------------------


def _jsonl(*records: object) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def test_mooncake_cache_counts_repeated_blocks_with_partial_last_block(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "m.jsonl",
        _jsonl(
            {"timestamp": 0, "input_length": 1100, "output_length": 7, "hash_ids": [1, 2, 3]},
            {"timestamp": 1500, "input_length": 1100, "output_length": 0, "hash_ids": [1, 2, 3]},
            {"timestamp": 2000, "input_length": 600, "output_length": 1, "hash_ids": [1, 9]},
            {"timestamp": 2000, "input_length": 300, "output_length": 1, "hash_ids": [9]},
            {"timestamp": 2001, "input_length": 0, "output_length": 1, "hash_ids": []},
        ),
    )
    start = datetime(2025, 5, 1, 12, tzinfo=UTC)
    requests = read_trace(path, start=start)
    assert [r.cached_input_tokens for r in requests] == [0, 1100, MOONCAKE_BLOCK_TOKENS, 300, 0]
    assert requests[1].occurred_at == start + timedelta(milliseconds=1500)
    assert [r.input_tokens for r in requests] == [1100, 1100, 600, 300, 0]


def test_mooncake_default_start_and_naive_start_is_utc(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "m.jsonl",
        _jsonl({"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": [0]}),
    )
    assert read_trace(path)[0].occurred_at == datetime(2024, 1, 1, 0, 0, 0, 5_000, tzinfo=UTC)
    naive = read_trace(path, start=datetime(2030, 1, 1))[0]
    assert naive.occurred_at == datetime(2030, 1, 1, 0, 0, 0, 5_000, tzinfo=UTC)


GOOD_MOONCAKE = {"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [0]}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"timestamp": 0, "input_length": 10', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({**GOOD_MOONCAKE, "input_length": -1}), "input_length must not be negative"),
        (json.dumps({**GOOD_MOONCAKE, "output_length": 2.5}), "output_length must be an integer"),
        (json.dumps({**GOOD_MOONCAKE, "output_length": True}), "output_length must be an integer"),
        (json.dumps({**GOOD_MOONCAKE, "timestamp": "0"}), "timestamp must be an integer"),
        (
            json.dumps({k: v for k, v in GOOD_MOONCAKE.items() if k != "timestamp"}),
            "missing key 'timestamp'",
        ),
        (
            json.dumps({k: v for k, v in GOOD_MOONCAKE.items() if k != "hash_ids"}),
            "hash_ids must be a list",
        ),
        (
            json.dumps({**GOOD_MOONCAKE, "hash_ids": [0, 1]}),
            "2 hash_ids for input_length 10, expected 1",
        ),
        (json.dumps({**GOOD_MOONCAKE, "hash_ids": ["a"]}), "hash_ids must be integers"),
    ],
)
def test_mooncake_bad_lines_name_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = _write(tmp_path, "m.jsonl", _jsonl(GOOD_MOONCAKE) + "\n" + line + "\n")
    _fails(path, 3, fragment)  # line 2 is blank and skipped, line 3 is the bad one


# --- generic CSV --------------------------------------------------------------------------

CSV_HEADER = "user,model,input_tokens,output_tokens,timestamp"


def test_csv_timestamps_users_models_and_cache(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "t.csv",
        "input_tokens,output_tokens,timestamp,user,model,cached_input_tokens\n"
        "10,2,2024-03-01T10:00:00,alice,gpt-4o,4\n"
        "11,3,2024-03-01T10:00:00+02:00,,,\n"
        "12,4,2024-03-01T10:00:00.1234567Z, bob ,m,0\n"
        "13,5,1700000000.5,carol,m,13\n"
        "14,6,1700000000,carol,m,0\n",
    )
    assert detect_format(path) is TraceFormat.CSV
    first, second, third, fourth, fifth = read_trace(path)
    assert first == TraceRequest(datetime(2024, 3, 1, 10, tzinfo=UTC), 10, 2, 4, "alice", "gpt-4o")
    assert second == TraceRequest(datetime(2024, 3, 1, 8, tzinfo=UTC), 11, 3, 0, None, None)
    assert third.occurred_at == datetime(2024, 3, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    assert third.user == "bob"
    assert fourth.occurred_at == datetime(2023, 11, 14, 22, 13, 20, 500_000, tzinfo=UTC)
    assert fourth.cached_input_tokens == 13
    assert fifth.occurred_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert all(r.occurred_at.tzinfo is UTC for r in (first, second, third, fourth, fifth))


def test_csv_start_shifts_earliest_request(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "t.csv",
        f"{CSV_HEADER}\nu,m,1,1,2024-01-01T00:00:10\nu,m,1,1,2024-01-01T00:00:05\n",
    )
    start = datetime(2030, 6, 1, 9, tzinfo=timezone(timedelta(hours=2)))
    later, earlier = read_trace(path, start=start)
    assert earlier.occurred_at == datetime(2030, 6, 1, 7, tzinfo=UTC)
    assert later.occurred_at == datetime(2030, 6, 1, 7, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("u,m,-1,1,2024-01-01", "input_tokens must not be negative"),
        ("u,m,1,1.0,2024-01-01", "output_tokens must be a whole number"),
        ("u,m,１,1,2024-01-01", "input_tokens must be a whole number"),
        ("u,m,1,1,not-a-date", "bad timestamp"),
        ("u,m,1,1,", "bad timestamp"),
        ("u,m,1,1,1e9", "bad timestamp"),
        ("u,m,1,1", "expected 5 fields, got 4"),
    ],
)
def test_csv_bad_rows_name_file_and_line(tmp_path: Path, row: str, fragment: str) -> None:
    path = _write(tmp_path, "t.csv", f"{CSV_HEADER}\nu,m,1,1,2024-01-01\n{row}\n")
    _fails(path, 3, fragment, TraceFormat.CSV)


def test_csv_cached_above_input(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv", f"{CSV_HEADER},cached_input_tokens\nu,m,5,1,2024-01-01,6\n")
    _fails(path, 2, "cached_input_tokens 6 exceeds input_tokens 5")


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("user,model,input_tokens,timestamp", "missing columns ['output_tokens']"),
        (f"{CSV_HEADER},cached_input_token", "unknown columns ['cached_input_token']"),
        (f"{CSV_HEADER},user", "duplicate columns"),
    ],
)
def test_csv_bad_header(tmp_path: Path, header: str, fragment: str) -> None:
    path = _write(tmp_path, "t.csv", f"{header}\n")
    _fails(path, 1, fragment)


# --- whole-file problems and detection ----------------------------------------------------


@pytest.mark.parametrize("fmt", [None, *TraceFormat])
@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl"])
def test_empty_file(tmp_path: Path, name: str, fmt: TraceFormat | None) -> None:
    path = _write(tmp_path, name, "\r\n \n")
    _fails(path, None, "trace file is empty", fmt)


@pytest.mark.parametrize(
    ("name", "text"),
    [("h.csv", AZURE_HEADER), ("h.csv", CSV_HEADER + "\n\n")],
)
def test_header_only_file_has_no_requests(tmp_path: Path, name: str, text: str) -> None:
    _fails(_write(tmp_path, name, text), None, "trace has no requests")


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    _fails(tmp_path / "absent.csv", None, "cannot read trace", TraceFormat.CSV)
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"user,model,input_tokens,output_tokens,timestamp\n\xe9,m,1,1,2024-01-01\n")
    _fails(path, None, "not UTF-8 text")


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(_write(tmp_path, "x.jsonl", "")) is TraceFormat.MOONCAKE
    assert detect_format(_write(tmp_path, "m.txt", '\n{"timestamp": 0}\n')) is TraceFormat.MOONCAKE
    assert detect_format(_write(tmp_path, "a.txt", "\ufeff" + AZURE_HEADER)) is TraceFormat.AZURE
    assert detect_format(_write(tmp_path, "c.txt", CSV_HEADER)) is TraceFormat.CSV
    with pytest.raises(TraceFormatError, match=r"b\.txt:2: unrecognised trace format"):
        detect_format(_write(tmp_path, "b.txt", "\nhello world\n"))
    with pytest.raises(TraceFormatError, match="empty"):
        detect_format(_write(tmp_path, "e.txt", ""))


def test_trace_format_error_is_invalid_input() -> None:
    assert issubclass(TraceFormatError, InvalidInput)
    assert TraceFormatError.code == "trace_invalid"


# --- synthetic Azure trace ----------------------------------------------------------------


def test_synthetic_matches_published_mean_and_median() -> None:
    requests = synthetic_azure_trace()
    stats = AZURE_CODE_TRACE_STATS
    assert len(requests) == stats.rows
    for column, published in (
        ("input_tokens", stats.input_tokens),
        ("output_tokens", stats.output_tokens),
    ):
        values = [getattr(r, column) for r in requests]
        assert statistics.fmean(values) == pytest.approx(float(published.mean), rel=0.15)
        assert statistics.median(values) == pytest.approx(published.p50, rel=0.15)
        assert published.min <= min(values) and max(values) <= published.max


def test_synthetic_arrivals_span_the_published_window() -> None:
    start = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    requests = synthetic_azure_trace(500, seed=7, start=start)
    times = [r.occurred_at for r in requests]
    assert times == sorted(times)
    assert times[0] == start
    assert abs(times[-1] - (start + AZURE_CODE_TRACE_STATS.span)) <= timedelta(microseconds=1)
    assert synthetic_azure_trace(3)[0].occurred_at == AZURE_CODE_TRACE_STATS.first_at


def test_synthetic_is_deterministic_per_seed() -> None:
    assert synthetic_azure_trace(300, seed=3) == synthetic_azure_trace(300, seed=3)
    assert synthetic_azure_trace(300, seed=3) != synthetic_azure_trace(300, seed=4)


def test_synthetic_sizes() -> None:
    assert synthetic_azure_trace(0) == []
    assert len(synthetic_azure_trace(1)) == 1
    with pytest.raises(InvalidInput):
        synthetic_azure_trace(-1)


# --- gzipped files -------------------------------------------------------------------------


def test_gzipped_traces_read_like_plain_ones(tmp_path: Path) -> None:
    text = f"{AZURE_HEADER}\r\n2023-11-16 18:17:03.9999999,10,2\r\n2023-11-16 18:17:04.0,7,1"
    plain = _write(tmp_path, "a.csv", text)
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    assert read_trace(packed) == read_trace(plain)
    moon = tmp_path / "m.jsonl.gz"
    moon.write_bytes(gzip.compress(b'{"timestamp": 5, "input_length": 3, "output_length": 1,'
                                   b' "hash_ids": [9]}\n'))  # fmt: skip
    assert detect_format(moon) is TraceFormat.MOONCAKE
    assert read_trace(moon)[0].input_tokens == 3


def test_a_gz_name_that_is_not_gzip_is_a_one_line_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv.gz", f"{AZURE_HEADER}\n2023-11-16 18:17:03,1,1\n")
    _fails(path, None, "not a readable gzip file")
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(b"user,model\n" * 100)[:40])
    _fails(truncated, None, "not a readable gzip file")
