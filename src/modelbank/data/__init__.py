"""Real public data shipped inside the package (DESIGN §15): two LLM request traces and a
provider price sheet, gzipped, with their licences (``README.md`` in this folder gives the
sources, checksums and attribution).

The default data folder is this one (:data:`PACKAGED_DATA_DIR`); ``MODELBANK_DATA_DIR``
points elsewhere. A folder may hold a file plain or gzipped (``name`` or ``name.gz``):
:func:`locate` finds either, and the readers open both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelbank.errors import NotFound

PACKAGED_DATA_DIR = Path(__file__).resolve().parent
"""The folder of the shipped files (inside the installed package)."""

AZURE_TRACE = "AzureLLMInferenceTrace_code.csv"
MOONCAKE_TRACE = "mooncake_conversation_trace.jsonl"
PRICE_SHEET = "litellm_model_prices_and_context_window.json"


@dataclass(frozen=True, slots=True)
class DataSource:
    """Where a shipped file comes from: the line a report prints to credit it."""

    file: str
    credit: str
    licence: str


SOURCES: dict[str, DataSource] = {
    AZURE_TRACE: DataSource(
        AZURE_TRACE,
        "Azure LLM inference trace 2023 (code, 8,819 requests), Microsoft Azure Public Dataset"
        " (https://github.com/Azure/AzurePublicDataset); Patel et al., Splitwise, ISCA 2024",
        "CC-BY-4.0",
    ),
    MOONCAKE_TRACE: DataSource(
        MOONCAKE_TRACE,
        "Mooncake conversation trace (12,031 requests), kvcache-ai/Mooncake"
        " (https://github.com/kvcache-ai/Mooncake); Qin et al., Mooncake, USENIX FAST 2025",
        "Apache-2.0",
    ),
    PRICE_SHEET: DataSource(
        PRICE_SHEET,
        "LiteLLM model price sheet (BerriAI/litellm 1.109.1, https://github.com/BerriAI/litellm)",
        "MIT",
    ),
}
"""Attribution of each shipped file, by its plain name."""


class DataFileMissing(NotFound):
    """A data file is neither in the data folder plain nor gzipped. Context: ``path``."""

    code = "data_file_missing"


def locate(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it is a file, else ``folder/name.gz``, else ``None``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def require(folder: Path, name: str) -> Path:
    """:func:`locate`, or raise :class:`DataFileMissing` naming the folder and the file."""
    found = locate(folder, name)
    if found is None:
        raise DataFileMissing(
            f"{name} (or {name}.gz) not found in the data folder {folder}"
            " (MODELBANK_DATA_DIR; unset, it is the data shipped with modelbank)",
            path=str(folder / name),
        )
    return found


def credit_line(name: str) -> str:
    """``"<credit>, <licence>"`` for a shipped file's plain or gzipped name."""
    source = SOURCES[name.removesuffix(".gz")]
    return f"{source.credit}, {source.licence}"


__all__ = [
    "AZURE_TRACE",
    "MOONCAKE_TRACE",
    "PACKAGED_DATA_DIR",
    "PRICE_SHEET",
    "SOURCES",
    "DataFileMissing",
    "DataSource",
    "credit_line",
    "locate",
    "require",
]
