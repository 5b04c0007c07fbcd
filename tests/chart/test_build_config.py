"""Dockerfiles (hadolint), skaffold.yaml (schema + artifacts) and the CI workflow (actionlint)."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ._support import REPO_ROOT, tool

SKAFFOLD_SCHEMA = Path(__file__).parent / "schemas" / "skaffold-v4beta14.json"  # vendored
DOCKERFILES = sorted(
    [*REPO_ROOT.glob("libs/*/Dockerfile"), *REPO_ROOT.glob("services/*/Dockerfile")]
)
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))


def skaffold() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    return loaded


# ----- Dockerfiles -----------------------------------------------------------------------------


def test_base_and_service_dockerfiles_exist() -> None:
    relative = {str(p.relative_to(REPO_ROOT)) for p in DOCKERFILES}
    assert {"libs/common/Dockerfile", "services/marketsim/Dockerfile"} <= relative


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint(dockerfile: Path) -> None:
    # Run from the repo root so .hadolint.yaml (if any) applies.
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


SERVICE_DOCKERFILES = [p for p in DOCKERFILES if p.parts[-3] == "services"]
TORCH_SERVICES = {"inference", "trainer"}
DIGEST_PINNED = re.compile(
    r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", re.M
)


def stages(text: str) -> list[str]:
    """The Dockerfile's build stages, each from its FROM line on."""
    parts = re.split(r"^(?=FROM )", text, flags=re.M)
    return [p for p in parts if p.startswith("FROM ")]


def instructions(text: str) -> list[str]:
    """Instructions with their continuation lines joined (comments dropped)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [line for line in joined.splitlines() if line.strip()]


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=lambda p: p.parent.name)
def test_service_dockerfile_builds_on_the_base_image(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    name = dockerfile.parent.name
    assert "ARG BASE_IMAGE=its-common:latest" in text
    assert "FROM ${BASE_IMAGE}" in text
    assert "--no-index --find-links /wheels" in text  # extends the base venv, no second copy
    assert f"COPY --chown=10001:10001 services/{name}/" in text
    assert f'ENTRYPOINT ["its-{name}"]' in text
    assert "USER 10001" in text


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=lambda p: p.parent.name)
def test_service_image_reuses_the_base_dependencies_and_caches_its_own(dockerfile: Path) -> None:
    """its-common's dependencies are built once, in the base image: no service builds its-common
    or its wheels again. The service's own dependencies are installed (constrained by the lock)
    before its code arrives, so a code change reuses that layer."""
    text = dockerfile.read_text()
    name = dockerfile.parent.name
    assert not [line for line in instructions(text) if "libs/common" in line]
    for line in instructions(text):
        if "pip wheel" in line:
            assert "--no-deps" in line, line
    final = instructions(stages(text)[-1])
    deps = next(i for i, line in enumerate(final) if "/opt/its/install_deps.py" in line)
    code = next(
        i for i, line in enumerate(final) if f"its-{name}" in line and "pip install" in line
    )
    assert deps < code
    assert f"source=services/{name}/pyproject.toml" in final[deps]
    assert "--constraints /tmp/build/requirements.lock" in final[deps]
    assert "source=requirements.lock" in final[deps]
    torch_index = "https://download.pytorch.org/whl/cpu"
    assert (torch_index in text) == (name in TORCH_SERVICES)
    for line in instructions(text):
        if line.startswith("RUN") and ("pip install" in line or "pip wheel" in line):
            assert "--no-cache-dir" in line, line


def test_base_dockerfile_shape() -> None:
    text = (REPO_ROOT / "libs" / "common" / "Dockerfile").read_text()
    assert "AS builder" in text
    assert "python -m venv /opt/venv" in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert "compileall" in text
    assert "--uid 10001" in text and "USER 10001:10001" in text
    assert "PATH=/opt/venv/bin:$PATH" in text
    assert 'ENTRYPOINT ["' in text
    assert DIGEST_PINNED.search(text), "PYTHON_IMAGE is not pinned by tag and digest"
    # Dependencies (lock + pyproject.toml) before the library's source.
    lines = instructions(text)
    deps = next(
        i for i, line in enumerate(lines) if line.startswith("RUN") and "install_deps" in line
    )
    source = lines.index("COPY libs/common/ libs/common/")
    assert deps < source
    assert "--constraints /opt/its/requirements.lock" in lines[deps]
    # The runtime stage installs nothing (no compiler, no build tools): it copies the venv.
    runtime = stages(text)[-1]
    assert "apt-get" not in runtime and "pip install" not in runtime


def test_requirements_lock_is_at_the_repository_root() -> None:
    assert (REPO_ROOT / "requirements.lock").is_file()


def build_context_sources(dockerfile: Path) -> list[str]:
    """Every path a Dockerfile reads from the build context (COPY without --from, bind mounts
    without from=)."""
    found: list[str] = []
    for line in instructions(dockerfile.read_text()):
        if line.startswith("COPY") and "--from=" not in line:
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            found += words[:-1]
        for mount in re.findall(r"--mount=(\S+)", line):
            options = dict(o.split("=", 1) for o in mount.split(",") if "=" in o)
            if options.get("type") == "bind" and "from" not in options:
                found.append(options["source"])
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_build_context_source_exists(dockerfile: Path) -> None:
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = build_context_sources(dockerfile)
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"{dockerfile}: {source} does not exist"
        assert source.split("/")[0] not in ignored, f"{dockerfile}: {source} is in .dockerignore"


def test_build_context_check_sees_copies_and_mounts(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        "FROM x AS a\nCOPY nope/ \\\n  /x/\nCOPY --from=a /y /y\n"
        "RUN --mount=type=bind,source=gone.txt,target=/g true\n"
    )
    assert build_context_sources(broken) == ["nope/", "gone.txt"]


@pytest.mark.parametrize(
    ("project", "present", "absent"),
    [
        ("libs/common", ["pydantic>=2.9,<3", "psycopg[binary,pool]>=3.2"], ["torch==2.13.0"]),
        ("services/inference", ["torch==2.13.0", "numpy>=1.26"], ["its-common[model]"]),
        ("services/trader", ["ib_async>=2.1"], ["its-common", "torch==2.13.0"]),
    ],
)
def test_install_deps_expands_its_common_extras(
    project: str, present: list[str], absent: list[str]
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "libs" / "common" / "docker" / "install_deps.py"),
            str(REPO_ROOT / project / "pyproject.toml"),
            "--common",
            str(REPO_ROOT / "libs" / "common" / "pyproject.toml"),
            "--constraints",
            "requirements.lock",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    words = shlex.split(result.stdout)
    assert words[1:5] == ["-m", "pip", "install", "--no-cache-dir"]
    assert words[words.index("--constraint") + 1] == "requirements.lock"
    for requirement in present:
        assert requirement in words
    for requirement in absent:
        assert requirement not in words


# ----- skaffold --------------------------------------------------------------------------------


def test_skaffold_validates_against_the_v4beta14_schema() -> None:
    if not SKAFFOLD_SCHEMA.is_file():
        pytest.fail(f"skaffold schema missing: expected {SKAFFOLD_SCHEMA}")
    schema = json.loads(SKAFFOLD_SCHEMA.read_text())
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14"
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(config), key=lambda e: list(e.path)
    )
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


# Images of Jobs rather than Deployments, and the values key that names them.
JOB_IMAGE_KEYS = {"trainer": "trainer.image"}
# Images built only with a profile (name -> profile).
PROFILE_IMAGES = {"its-trainer": "trainer"}


def with_profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` with the profile's JSON patches applied (the `add` ops skaffold uses here)."""
    result = copy.deepcopy(config)
    profile = next(p for p in config["profiles"] if p["name"] == name)
    for patch in profile["patches"]:
        assert patch["op"] == "add", patch
        *parents, last = patch["path"].strip("/").split("/")
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if last == "-":
            target.append(patch["value"])
        else:
            target[last] = patch["value"]
    return result


def schema_errors(config: dict[str, Any]) -> list[str]:
    schema = json.loads(SKAFFOLD_SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(config), key=lambda e: list(e.path)
    )
    return [f"{list(e.path)}: {e.message}" for e in errors]


def test_skaffold_with_the_trainer_profile_validates() -> None:
    assert schema_errors(with_profile(skaffold(), "trainer")) == []


def test_skaffold_deploys_into_the_its_namespace() -> None:
    config = skaffold()
    release = config["deploy"]["helm"]["releases"][0]
    assert release["namespace"] == "its"
    assert release["createNamespace"] is True
    assert {f["namespace"] for f in config["portForward"]} == {"its"}
    readme = (REPO_ROOT / "README.md").read_text()
    assert "-n its" in readme or "--namespace its" in readme


def test_skaffold_builds_the_trainer_only_with_its_profile() -> None:
    config = skaffold()
    images = {a["image"] for a in config["build"]["artifacts"]}
    assert "its-trainer" not in images
    templates = config["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    assert not [k for k in templates if k.startswith("trainer.")]
    profiled = with_profile(config, "trainer")
    trainer = [a for a in profiled["build"]["artifacts"] if a["image"] == "its-trainer"]
    assert len(trainer) == 1
    assert trainer[0]["docker"]["dockerfile"] == "services/trainer/Dockerfile"
    release = profiled["deploy"]["helm"]["releases"][0]
    assert release["setValueTemplates"]["trainer.image.tag"] == "{{.IMAGE_TAG_its_trainer}}"
    assert release["setValues"]["trainer.enabled"] is True


def test_skaffold_builds_every_image_and_sets_its_values() -> None:
    base = skaffold()
    assert base["build"]["local"]["push"] is False
    assert base["build"]["local"]["useBuildkit"] is True
    services = sorted(p.parent.name for p in REPO_ROOT.glob("services/*/Dockerfile"))
    default_images = {a["image"] for a in base["build"]["artifacts"]}
    assert default_images == {"its-common", *(f"its-{s}" for s in services)} - set(PROFILE_IMAGES)
    config = base
    for profile in sorted(set(PROFILE_IMAGES.values())):
        config = with_profile(config, profile)
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {"its-common", *(f"its-{s}" for s in services)}
    for image, artifact in artifacts.items():
        dockerfile = REPO_ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file(), f"{image}: {dockerfile} missing"
        if image != "its-common":
            assert artifact["requires"] == [{"image": "its-common", "alias": "BASE_IMAGE"}]
    releases = config["deploy"]["helm"]["releases"]
    assert [r["chartPath"] for r in releases] == ["charts/its"]
    templates = releases[0]["setValueTemplates"]
    for service in services:
        var = f"its_{service}".replace("-", "_")
        key = JOB_IMAGE_KEYS.get(service, f"services.{service}.image")
        assert templates[f"{key}.repository"] == f"{{{{.IMAGE_REPO_{var}}}}}"
        assert templates[f"{key}.tag"] == f"{{{{.IMAGE_TAG_{var}}}}}"
    for key in ("migrations", "helmTest"):
        assert templates[f"{key}.image.repository"] == "{{.IMAGE_REPO_its_common}}"
        assert templates[f"{key}.image.tag"] == "{{.IMAGE_TAG_its_common}}"
    forwards = {(f["resourceName"], f["port"]) for f in config["portForward"]}
    assert {("its-dashboard", 8080), ("its-marketsim", 8765)} <= forwards


# ----- GitHub Actions --------------------------------------------------------------------------


def test_actionlint() -> None:
    assert WORKFLOWS, "no workflow files"
    result = subprocess.run(
        [tool("actionlint"), "-no-color", *map(str, WORKFLOWS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_jobs() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = workflow["jobs"]
    assert set(jobs) >= {"lint-and-test", "kind"}
    assert jobs["kind"]["needs"] == "lint-and-test"
    steps = json.dumps(jobs["kind"]["steps"])
    for fragment in (
        "helm/kind-action",
        "kind load docker-image",
        "--build-arg",
        "helm install",
        "--wait --wait-for-jobs --timeout 10m",  # the migration Job is part of the release
        '[ \\"${service}\\" = trainer ] && continue',  # not built: the trainer is off
        "helm test",
        "failure()",
    ):
        assert fragment in steps, fragment
    assert "make test" in json.dumps(jobs["lint-and-test"]["steps"])
