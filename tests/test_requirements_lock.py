"""requirements.lock (offline): it pins every direct dependency of every pyproject and of
requirements-dev.txt, exactly, to a version that dependency accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECTS = sorted(
    [REPO_ROOT / "libs" / "common" / "pyproject.toml", *REPO_ROOT.glob("services/*/pyproject.toml")]
)
# Linux x86_64, CPython 3.11: where ITS runs (the Makefile, CI and the images).
TARGET = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11",
          "python_full_version": "3.11.7", "platform_machine": "x86_64"}  # fmt: skip


def local_projects() -> set[str]:
    return {canonicalize_name(tomllib.loads(p.read_text())["project"]["name"]) for p in PYPROJECTS}


def direct_requirements() -> list[tuple[str, Requirement]]:
    found: list[tuple[str, Requirement]] = []
    for path in PYPROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        texts = [*project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            texts.extend(extra)
        where = str(path.relative_to(REPO_ROOT))
        found.extend((where, Requirement(t)) for t in texts)
    for raw in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines():
        text = raw.split("#", 1)[0].strip()
        if text:
            found.append(("requirements-dev.txt", Requirement(text)))
    local = local_projects()
    return [
        (where, req)
        for where, req in found
        if canonicalize_name(req.name) not in local
        and (req.marker is None or req.marker.evaluate(TARGET))
    ]


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and ";" not in line and " " not in line, f"not an exact pin: {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"{name} pinned twice"
        pins[key] = Version(version)
    return pins


def test_the_lock_has_exact_unique_pins() -> None:
    pins = locked()
    assert len(pins) > 50 and "torch" in pins


@pytest.mark.parametrize(
    ("where", "requirement"), direct_requirements(), ids=lambda v: str(v).replace(" ", "")
)
def test_every_direct_dependency_is_pinned_within_its_range(
    where: str, requirement: Requirement
) -> None:
    pins = locked()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement} ({where}) is not in requirements.lock: run `make lock`"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"requirements.lock pins {name}=={pins[name]}, outside {requirement} ({where}): "
        "run `make lock`"
    )


def test_torch_is_pinned_to_its_cpu_build_version_without_cuda_packages() -> None:
    pins = locked()
    assert pins["torch"].local is None  # +cpu is chosen by the index, not by the pin
    assert not [n for n in pins if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
