"""Reading LLM request traces into :class:`TraceRequest` rows (DESIGN §15).

Three formats (the two real ones ship in :mod:`modelbank.data`, whose README describes them):

* :attr:`TraceFormat.AZURE`: ``TIMESTAMP,ContextTokens,GeneratedTokens``, CRLF, no newline
  after the last row, wall-clock timestamps with 7 fractional digits and no zone (read as UTC,
  truncated to microseconds).
* :attr:`TraceFormat.MOONCAKE`: JSON Lines with ``timestamp`` (ms from trace start),
  ``input_length``, ``output_length`` and ``hash_ids`` (ids of 512-token prefix blocks).
* :attr:`TraceFormat.CSV`: our generic ``user,model,input_tokens,output_tokens,timestamp``
  (+ optional ``cached_input_tokens``) for traces users bring.

Invariants of every :class:`TraceRequest` returned: ``occurred_at`` is timezone-aware UTC,
token counts are ``int`` ≥ 0 and ``cached_input_tokens ≤ input_tokens``. Rows keep file order.
Anything else in a file raises :class:`TraceFormatError` naming ``file:line``. A file whose
name ends in ``.gz`` is gunzipped on the fly (the format is then that of the name without it).

:func:`synthetic_azure_trace` is a stand-in for the Azure trace, used only when asked for
(``modelbank demo --synthetic``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelbank.errors import InvalidInput

MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per Mooncake ``hash_ids`` prefix block (the trace's format); the last block holds
the rest."""
MOONCAKE_DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
"""Where Mooncake's relative ``timestamp`` 0 lands when ``read_trace`` gets no ``start``."""
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
CSV_REQUIRED_COLUMNS = ("user", "model", "input_tokens", "output_tokens", "timestamp")
CSV_OPTIONAL_COLUMNS = ("cached_input_tokens",)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TraceFormat(StrEnum):
    """The layout of a trace file."""

    AZURE = "azure"
    """Azure Public Dataset LLM inference trace CSV (absolute timestamps, no cache data)."""
    MOONCAKE = "mooncake"
    """Mooncake FAST'25 JSON Lines (relative ms timestamps, prefix-cache block ids)."""
    CSV = "csv"
    """Generic CSV with optional user and model per request."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace. Counts are tokens; ``cached_input_tokens ≤ input_tokens``."""

    occurred_at: datetime
    """Arrival time, timezone-aware UTC."""
    input_tokens: int
    """Total input (prompt) tokens, cached ones included."""
    output_tokens: int
    """Generated tokens."""
    cached_input_tokens: int = 0
    """The part of ``input_tokens`` served from the prefix (KV) cache."""
    user: str | None = None
    """User named by the trace (generic CSV only); ``None`` means assign one."""
    model: str | None = None
    """Model named by the trace (generic CSV only); ``None`` means assign one."""


class TraceFormatError(InvalidInput):
    """A trace file that cannot be read; the message starts with ``file:line:``.

    Context: ``path`` (str) and ``line`` (1-based, ``None`` for whole-file problems).
    """

    code = "trace_invalid"


def _fail(path: Path, line: int | None, message: str) -> TraceFormatError:
    where = str(path) if line is None else f"{path}:{line}"
    return TraceFormatError(f"{where}: {message}", path=str(path), line=line)


def _plain_suffix(path: Path) -> str:
    """The file's suffix, lower case, ignoring a trailing ``.gz`` (``t.jsonl.gz`` → ``.jsonl``)."""
    name = path.name.lower().removesuffix(".gz")
    return Path(name).suffix


def _read_text(path: Path) -> str:
    """The whole file as text (UTF-8, optional BOM; gunzipped when the name ends in ``.gz``);
    raises if unreadable, not gzip when it says so, or empty."""
    try:
        raw = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (gzip.BadGzipFile, EOFError) as error:
        raise _fail(path, None, f"not a readable gzip file ({error})") from error
    except OSError as error:
        raise _fail(path, None, f"cannot read trace: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise _fail(path, None, f"not UTF-8 text (byte {error.start})") from error
    if not text.strip():
        raise _fail(path, None, "trace file is empty")
    return text


def detect_format(path: Path) -> TraceFormat:
    """Guess the format: ``.jsonl`` suffix (``.jsonl.gz`` too) or a first line starting with
    ``{`` → Mooncake; the exact Azure header → Azure; any other comma-separated header →
    generic CSV.

    Raises :class:`TraceFormatError` for an empty or unrecognisable file.
    """
    path = Path(path)
    if _plain_suffix(path) == ".jsonl":
        return TraceFormat.MOONCAKE
    return _detect(path, _read_text(path))


def _detect(path: Path, text: str) -> TraceFormat:
    if _plain_suffix(path) == ".jsonl":
        return TraceFormat.MOONCAKE
    lines = text.splitlines()
    line, first = next((n, text) for n, text in enumerate(lines, 1) if text.strip())
    if first.lstrip().startswith("{"):
        return TraceFormat.MOONCAKE
    if tuple(name.strip() for name in first.split(",")) == AZURE_COLUMNS:
        return TraceFormat.AZURE
    if "," in first:
        return TraceFormat.CSV
    raise _fail(path, line, "unrecognised trace format (expected a CSV header or JSON Lines)")


def read_trace(
    path: str | Path, fmt: TraceFormat | None = None, *, start: datetime | None = None
) -> list[TraceRequest]:
    """Read a whole trace file into requests, in file order.

    ``fmt`` defaults to :func:`detect_format`. ``start`` (naive means UTC) is when the trace
    begins: Mooncake's ``timestamp`` 0 (default :data:`MOONCAKE_DEFAULT_START`); for the
    formats with absolute times, every request is shifted so the earliest lands on ``start``.

    Mooncake cache rule: a block id already seen earlier in the trace is cached; block k of n
    covers 512 tokens except the last, which covers ``input_length - 512·(n-1)``; so
    ``cached_input_tokens`` is the summed size of repeated blocks. ``len(hash_ids)`` must be
    ``ceil(input_length / 512)``.

    Raises :class:`TraceFormatError` (``file:line``) for an unreadable or empty file, a missing
    header column or key, a negative or non-integer token count, a bad timestamp, or
    ``cached_input_tokens > input_tokens``.

    Generic CSV timestamps: ASCII digits with at most one ``.`` are epoch seconds (fraction
    truncated to µs); anything else must be ISO 8601 for ``datetime.fromisoformat``.
    """
    path = Path(path)
    text = _read_text(path)
    fmt = _detect(path, text) if fmt is None else TraceFormat(fmt)
    start_utc = None if start is None else _as_utc(start)
    if fmt is TraceFormat.MOONCAKE:
        requests = _read_mooncake(path, text, start_utc or MOONCAKE_DEFAULT_START)
    else:
        reader = _read_azure if fmt is TraceFormat.AZURE else _read_csv
        requests = reader(path, _csv_rows(text))
        if start_utc is not None and requests:
            shift = start_utc - min(request.occurred_at for request in requests)
            requests = [_shifted(request, shift) for request in requests]
    if not requests:
        raise _fail(path, None, "trace has no requests")
    return requests


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _shifted(request: TraceRequest, shift: timedelta) -> TraceRequest:
    return TraceRequest(
        request.occurred_at + shift,
        request.input_tokens,
        request.output_tokens,
        request.cached_input_tokens,
        request.user,
        request.model,
    )


def _count(text: str, column: str, path: Path, line: int) -> int:
    """A CSV token count: ASCII digits only (no sign, fraction, ``_`` or exponent)."""
    if text.isascii() and text.isdigit():
        return int(text)
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise _fail(path, line, f"{column} must not be negative, got {text}")
    raise _fail(path, line, f"{column} must be a whole number of tokens, got {text!r}")


def _timestamp(text: str, path: Path, line: int) -> datetime:
    """ISO 8601 (naive → UTC; Python 3.11 truncates > 6 fractional digits) or epoch seconds."""
    try:
        if text.replace(".", "", 1).isdigit() and text.isascii():
            microseconds = int(Decimal(text) * 1_000_000)  # int() truncates toward zero
            return _EPOCH + timedelta(microseconds=microseconds)
        return _as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError, InvalidOperation):
        pass
    raise _fail(path, line, f"bad timestamp {text!r} (expected ISO 8601 or epoch seconds)")


def _csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank CSV record; the number is its last line."""
    rows = csv.reader(io.StringIO(text, newline=""))  # newline="": CRLF stays csv's business
    for row in rows:
        if row:
            yield rows.line_num, row


def _read_azure(path: Path, rows: Iterator[tuple[int, list[str]]]) -> list[TraceRequest]:
    header_line, header = next(rows, (1, []))
    if tuple(name.strip() for name in header) != AZURE_COLUMNS:
        expected = ",".join(AZURE_COLUMNS)
        raise _fail(path, header_line, f"expected header {expected!r}, got {header!r}")
    requests: list[TraceRequest] = []
    for line, row in rows:
        if len(row) != len(AZURE_COLUMNS):
            raise _fail(path, line, f"expected {len(AZURE_COLUMNS)} fields, got {len(row)}")
        stamp, context, generated = (cell.strip() for cell in row)
        requests.append(
            TraceRequest(
                _timestamp(stamp, path, line),
                _count(context, "ContextTokens", path, line),
                _count(generated, "GeneratedTokens", path, line),
            )
        )
    return requests


def _read_csv(path: Path, rows: Iterator[tuple[int, list[str]]]) -> list[TraceRequest]:
    header_line, header = next(rows, (1, []))
    names = [name.strip() for name in header]
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in names]
    known = CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS
    unknown = [name for name in names if name not in known]
    if missing or unknown or len(set(names)) != len(names):
        problem = f"missing columns {missing}" if missing else f"unknown columns {unknown}"
        if not missing and not unknown:
            problem = "duplicate columns"
        raise _fail(path, header_line, f"{problem} in header {names} (expected {', '.join(known)})")
    at = {name: index for index, name in enumerate(names)}
    cached_at = at.get("cached_input_tokens")
    requests: list[TraceRequest] = []
    for line, row in rows:
        if len(row) != len(names):
            raise _fail(path, line, f"expected {len(names)} fields, got {len(row)}")
        cells = [cell.strip() for cell in row]
        input_tokens = _count(cells[at["input_tokens"]], "input_tokens", path, line)
        cached = 0
        if cached_at is not None and cells[cached_at]:
            cached = _count(cells[cached_at], "cached_input_tokens", path, line)
            if cached > input_tokens:
                message = f"cached_input_tokens {cached} exceeds input_tokens {input_tokens}"
                raise _fail(path, line, message)
        requests.append(
            TraceRequest(
                _timestamp(cells[at["timestamp"]], path, line),
                input_tokens,
                _count(cells[at["output_tokens"]], "output_tokens", path, line),
                cached,
                cells[at["user"]] or None,
                cells[at["model"]] or None,
            )
        )
    return requests


def _json_count(record: dict[str, Any], key: str, path: Path, line: int) -> int:
    if key not in record:
        raise _fail(path, line, f"missing key {key!r}")
    value = record[key]
    if type(value) is not int:  # bool is an int subclass, 5.0 is not a count
        raise _fail(path, line, f"{key} must be an integer, got {value!r}")
    if value < 0:
        raise _fail(path, line, f"{key} must not be negative, got {value}")
    return value


def _read_mooncake(path: Path, text: str, start: datetime) -> list[TraceRequest]:
    seen: set[int] = set()  # every block id met so far, in trace order
    requests: list[TraceRequest] = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise _fail(path, line, f"not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise _fail(path, line, "expected a JSON object")
        offset_ms = _json_count(record, "timestamp", path, line)
        input_tokens = _json_count(record, "input_length", path, line)
        output_tokens = _json_count(record, "output_length", path, line)
        blocks = record.get("hash_ids")
        if not isinstance(blocks, list):
            raise _fail(path, line, f"hash_ids must be a list of block ids, got {blocks!r}")
        last = -(-input_tokens // MOONCAKE_BLOCK_TOKENS) - 1
        if len(blocks) != last + 1:
            message = f"{len(blocks)} hash_ids for input_length {input_tokens}, expected {last + 1}"
            raise _fail(path, line, message)
        cached = 0
        for position, block in enumerate(blocks):
            if type(block) is not int:
                raise _fail(path, line, f"hash_ids must be integers, got {block!r}")
            if block in seen:
                last_size = input_tokens - MOONCAKE_BLOCK_TOKENS * last
                cached += MOONCAKE_BLOCK_TOKENS if position < last else last_size
            else:
                seen.add(block)
        requests.append(
            TraceRequest(
                start + timedelta(milliseconds=offset_ms), input_tokens, output_tokens, cached
            )
        )
    return requests


# --- synthetic stand-in for the Azure code trace -------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Published distribution summary of one token column (tokens per request)."""

    mean: Decimal
    p50: int
    p99: int
    max: int
    min: int


@dataclass(frozen=True, slots=True)
class TraceStats:
    """Published summary of a trace: row count, first arrival, span and token columns."""

    rows: int
    first_at: datetime
    span: timedelta
    input_tokens: TokenStats
    output_tokens: TokenStats


AZURE_CODE_TRACE_STATS = TraceStats(
    rows=8_819,
    first_at=datetime(2023, 11, 16, 18, 17, 3, 979_960, tzinfo=UTC),
    span=timedelta(minutes=57, seconds=15, milliseconds=950),  # 18:17:03.98 → 19:14:19.93
    input_tokens=TokenStats(mean=Decimal("2047.8"), p50=1_469, p99=7_436, max=7_437, min=3),
    output_tokens=TokenStats(mean=Decimal("27.9"), p50=13, p99=251, max=1_899, min=6),
)
"""Azure LLM inference trace 2023, code service (Azure Public Dataset, CC-BY-4.0;
Patel et al., "Splitwise", ISCA 2024): summary statistics computed over the whole
``AzureLLMInferenceTrace_code.csv`` (shipped in :mod:`modelbank.data`)."""


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _clipped_lognormal_mean(mu: float, sigma: float, low: int, high: int) -> float:
    """E[clip(X, low, high)] for ln X ~ N(mu, sigma²) (partial expectations of a lognormal)."""
    a, b = (math.log(low) - mu) / sigma, (math.log(high) - mu) / sigma
    body = math.exp(mu + sigma * sigma / 2) * (_normal_cdf(b - sigma) - _normal_cdf(a - sigma))
    return low * _normal_cdf(a) + body + high * (1.0 - _normal_cdf(b))


def _fit_lognormal(stats: TokenStats) -> tuple[float, float]:
    """(mu, sigma) with median ``p50`` and, after clipping to [min, max], mean ``mean``.

    mu = ln p50 fixes the median (clipping keeps it); sigma is found by bisection, since the
    clipped mean grows with sigma from p50 towards (min + max) / 2.
    """
    mu, target = math.log(stats.p50), float(stats.mean)
    low_sigma, high_sigma = 1e-6, 10.0
    for _ in range(100):  # 100 halvings of [0, 10] reach float resolution
        sigma = (low_sigma + high_sigma) / 2
        if _clipped_lognormal_mean(mu, sigma, stats.min, stats.max) < target:
            low_sigma = sigma
        else:
            high_sigma = sigma
    return mu, (low_sigma + high_sigma) / 2


def synthetic_azure_trace(
    n: int = AZURE_CODE_TRACE_STATS.rows, *, seed: int = 0, start: datetime | None = None
) -> list[TraceRequest]:
    """``n`` requests shaped like the Azure code trace (:data:`AZURE_CODE_TRACE_STATS`).

    Tokens: input and output each drawn from a lognormal with the published median, whose
    sigma makes the mean after clipping to the published [min, max] equal the published mean;
    rounded to whole tokens. Arrivals: a Poisson process conditioned on its span, i.e. the
    first request at ``start`` (naive means UTC; default the real trace's first arrival), the
    last at ``start + span`` and exponential gaps in between, normalised to the span.
    No cache, user or model. Deterministic: only ``random.Random(seed)`` is used.

    Raises :class:`InvalidInput` if ``n`` is negative.
    """
    if n < 0:
        raise InvalidInput(f"synthetic trace size must be ≥ 0, got {n}", n=n)
    if n == 0:
        return []
    stats = AZURE_CODE_TRACE_STATS
    first_at = stats.first_at if start is None else _as_utc(start)
    rng = random.Random(seed)
    gaps = [rng.expovariate(1.0) for _ in range(n - 1)]
    span_us = stats.span // timedelta(microseconds=1)
    scale = span_us / (sum(gaps) or 1.0)
    offsets_us = [0.0]
    for gap in gaps:
        offsets_us.append(offsets_us[-1] + gap * scale)
    columns = []
    for column in (stats.input_tokens, stats.output_tokens):
        mu, sigma = _fit_lognormal(column)
        draws = (round(rng.lognormvariate(mu, sigma)) for _ in range(n))
        columns.append([min(max(draw, column.min), column.max) for draw in draws])
    return [
        TraceRequest(first_at + timedelta(microseconds=round(offset)), tokens_in, tokens_out)
        for offset, tokens_in, tokens_out in zip(offsets_us, *columns, strict=True)
    ]
