"""The README's curl walk-through works as written (against a real `modelbank serve`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "README lost its HTTP walk-through"
    return str(blocks[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_walkthrough_runs_as_written(tmp_path: Path) -> None:
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    modelbank = Path(sys.executable).with_name("modelbank")
    (venv_bin / "modelbank").symlink_to(modelbank)
    script = "set -euo pipefail\n" + walkthrough()
    env = {**os.environ, "PORT": str(free_port())}
    env.pop("MODELBANK_DATABASE_URL", None)
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '"id":1' in out and '"id":2' in out
    assert '"charge_ucr":2000' in out
    assert '"earnings":[{"user_id":2,"amount_ucr":15000000}]' in out
    assert re.search(r"idempotency-hit: true", out, re.I)
    assert '"total_ucr":15000000' in out
    assert '"balance_ucr":99998000' in out
    assert re.search(r"}\s*404\n", out)
    assert "\n402\n" in out and '"left_ucr":1000000' in out  # the app key's limit
    assert '"usage_events":1' in out
    assert '"status":"pending"' in out and '"status":"completed"' in out
    assert '"cost_basis_uusd":17990000' in out
    assert "transfer_id,created_at,account,code" in out
