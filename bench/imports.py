"""How long the shipped real data takes to read: the price sheet and the traces.

Run by hand::

    .venv/bin/python bench/imports.py [--runs 5] [--json]

Times ``catalog.pricesheet.load_litellm_sheet`` on the shipped LiteLLM price sheet and
``traces.readers.read_trace`` on each shipped trace (all gzipped), best and median of
``--runs`` runs in seconds, and beside them the physical floor measured in the same run:
``gzip`` decompression plus ``json.loads`` / line splitting of the same bytes, with no
modelbank code. The budget the test suite used to assert (under a second each) lives here
now: a timed assertion fails on a busy CI neighbour and proves nothing about the code.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.data import AZURE_TRACE, MOONCAKE_TRACE, PACKAGED_DATA_DIR, PRICE_SHEET, require
from modelbank.traces.readers import read_trace


def _timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Best and median wall seconds of ``runs`` calls of ``fn``."""
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - began)
    return min(seconds), statistics.median(seconds)


def _floor_json(path: Path) -> None:
    json.loads(gzip.decompress(path.read_bytes()))


def _floor_lines(path: Path) -> None:
    gzip.decompress(path.read_bytes()).splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    sheet = require(PACKAGED_DATA_DIR, PRICE_SHEET)
    rows: list[dict[str, Any]] = []
    cases: list[tuple[str, Path, Callable[[], Any], Callable[[], Any]]] = [
        ("price sheet", sheet, lambda: load_litellm_sheet(sheet), lambda: _floor_json(sheet)),
    ]
    for name in (AZURE_TRACE, MOONCAKE_TRACE):
        path = require(PACKAGED_DATA_DIR, name)
        cases.append(
            (name, path, lambda p=path: read_trace(p), lambda p=path: _floor_lines(p))  # type: ignore[misc]
        )
    for label, path, ours, floor in cases:
        best, median = _timed(ours, args.runs)
        floor_best, _ = _timed(floor, args.runs)
        rows.append(
            {
                "data": label,
                "file": path.name,
                "best_s": round(best, 3),
                "median_s": round(median, 3),
                "floor_best_s": round(floor_best, 3),
                "vs_floor": round(best / floor_best, 1) if floor_best else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'data':<40} {'best s':>8} {'median s':>9} {'floor s':>8} {'vs floor':>9}")
    for row in rows:
        print(
            f"{row['data']:<40} {row['best_s']:>8.3f} {row['median_s']:>9.3f} "
            f"{row['floor_best_s']:>8.3f} {row['vs_floor']!s:>8}×"
        )


if __name__ == "__main__":
    main()
