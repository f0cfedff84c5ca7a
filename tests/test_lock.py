"""The hash locks (requirements/*.lock, issue 12 item 5) agree with pyproject.toml: every
dependency (and the test extra, and the build backend) is pinned to one exact version that
its specifier allows, with at least one sha256. A dependency added to pyproject.toml without
`make lock` fails here, before `make install` would fail on a machine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """{normalised name: (version, number of hashes)} of a lock written by uv."""
    found: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            found[name] = (Version(match.group(2)), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def requirements(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    if extra:
        wanted += project["optional-dependencies"][extra]
    build = (ROOT / "requirements" / "build.in").read_text().split()
    return [Requirement(text) for text in [*wanted, *build]]


@pytest.mark.parametrize(("lock", "extra"), [("runtime.lock", None), ("test.lock", "test")])
def test_every_dependency_is_pinned_with_hashes(lock: str, extra: str | None) -> None:
    pinned = pins(ROOT / "requirements" / lock)
    assert len(pinned) >= 40
    unhashed = [name for name, (_, hashes) in pinned.items() if hashes == 0]
    assert unhashed == [], f"pins without a hash in {lock}: {unhashed}"
    problems = []
    for req in requirements(extra):
        found = pinned.get(canonicalize_name(req.name))
        if found is None:
            problems.append(f"{req} is not in {lock}: run make lock")
        elif not req.specifier.contains(found[0], prereleases=True):
            problems.append(f"{req}: {lock} pins {found[0]}: run make lock")
    assert problems == []


def test_the_test_lock_keeps_the_runtime_pins() -> None:
    """`make test` and `make demo` run the same versions of what both install."""
    runtime = pins(ROOT / "requirements" / "runtime.lock")
    test = pins(ROOT / "requirements" / "test.lock")
    differ = {n: (v, test[n][0]) for n, (v, _) in runtime.items() if test.get(n, (v,))[0] != v}
    assert differ == {}
