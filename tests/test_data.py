"""The real data shipped inside the package (DESIGN §15): whole, unmodified, licensed,
credited, and the default data folder; no machine's absolute path in code or docs."""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from modelbank.config import load_settings
from modelbank.data import (
    AZURE_TRACE,
    MOONCAKE_TRACE,
    PACKAGED_DATA_DIR,
    PRICE_SHEET,
    DataFileMissing,
    credit_line,
    locate,
    require,
)

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_SHA256 = {  # modelbank/data/README.md, from the upstream repositories and wheel
    AZURE_TRACE: "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
    MOONCAKE_TRACE: "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
    PRICE_SHEET: "8f8060d8ce7a40c91b995c74d6a27657543d49e3c1c53430dabd556f244392c6",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_SHA256))
def test_shipped_file_is_the_upstream_file_gzipped(name: str) -> None:
    path = require(PACKAGED_DATA_DIR, name)
    assert path.name == f"{name}.gz"
    assert path.stat().st_size < 1_000_000  # the repository stays small: 1.0 MB in all
    digest = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    assert digest == UPSTREAM_SHA256[name]


def test_licences_and_attribution_travel_with_the_data() -> None:
    licences = sorted(p.name for p in (PACKAGED_DATA_DIR / "LICENSES").glob("*.txt"))
    assert licences == [
        "AzurePublicDataset-LICENSE-CC-BY-4.0.txt",
        "Mooncake-LICENSE-APACHE-2.0.txt",
        "litellm-LICENSE-MIT.txt",
    ]
    readme = (PACKAGED_DATA_DIR / "README.md").read_text()
    for fragment in ("CC-BY-4.0", "Apache-2.0", "MIT", "Splitwise", "FAST 2025"):
        assert fragment in readme
    assert credit_line(f"{AZURE_TRACE}.gz").endswith("CC-BY-4.0")
    assert credit_line(MOONCAKE_TRACE).endswith("Apache-2.0")
    assert credit_line(PRICE_SHEET).endswith("MIT")
    project_readme = (ROOT / "README.md").read_text()
    for fragment in ("Azure Public Dataset", "CC-BY-4.0", "Mooncake", "Apache-2.0", "LiteLLM"):
        assert fragment in project_readme


def test_default_data_folder_is_the_packaged_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELBANK_DATA_DIR", raising=False)
    assert load_settings().data_dir == PACKAGED_DATA_DIR
    monkeypatch.setenv("MODELBANK_DATA_DIR", "/srv/traces")
    assert load_settings().data_dir == Path("/srv/traces")


def test_locate_prefers_the_plain_file_and_require_names_what_is_missing(tmp_path: Path) -> None:
    assert locate(tmp_path, AZURE_TRACE) is None
    (tmp_path / f"{AZURE_TRACE}.gz").write_bytes(b"")
    assert locate(tmp_path, AZURE_TRACE) == tmp_path / f"{AZURE_TRACE}.gz"
    (tmp_path / AZURE_TRACE).write_text("")
    assert locate(tmp_path, AZURE_TRACE) == tmp_path / AZURE_TRACE
    with pytest.raises(DataFileMissing) as caught:
        require(tmp_path, MOONCAKE_TRACE)
    assert caught.value.code == "data_file_missing"
    assert str(tmp_path) in str(caught.value) and MOONCAKE_TRACE in str(caught.value)


def test_no_absolute_machine_paths_in_code_or_docs() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "src", "README.md", ".ci", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pattern = re.compile(r"/work/|/home/\w|\.\./shared")
    offenders = []
    for name in tracked:
        if name == ".ci/fresh-clone-demo":  # it checks that no ../shared is beside the clone
            continue
        path = ROOT / name
        if path.suffix in {".gz", ".png", ".ico"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == []
