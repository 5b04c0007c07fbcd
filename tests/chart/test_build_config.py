"""Dockerfiles (hadolint), skaffold.yaml (schema + artifacts) and the CI workflow (actionlint)."""

from __future__ import annotations

import json
import subprocess
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


@pytest.mark.parametrize(
    "dockerfile",
    [p for p in DOCKERFILES if p.parts[-3] == "services"],
    ids=lambda p: p.parent.name,
)
def test_service_dockerfile_builds_on_the_base_image(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    name = dockerfile.parent.name
    assert "ARG BASE_IMAGE=its-common:latest" in text
    assert "FROM ${BASE_IMAGE}" in text
    assert "--no-index --find-links /wheels" in text  # extends the base venv, no second copy
    assert f"COPY services/{name}/" in text
    assert f'ENTRYPOINT ["its-{name}"]' in text
    assert "USER 10001" in text


def test_base_dockerfile_shape() -> None:
    text = (REPO_ROOT / "libs" / "common" / "Dockerfile").read_text()
    assert "AS builder" in text
    assert "python -m venv /opt/venv" in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert "compileall" in text
    assert "--uid 10001" in text and "USER 10001:10001" in text
    assert "PATH=/opt/venv/bin:$PATH" in text
    assert 'ENTRYPOINT ["' in text


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


def test_skaffold_builds_every_image_and_sets_its_values() -> None:
    config = skaffold()
    assert config["build"]["local"]["push"] is False
    assert config["build"]["local"]["useBuildkit"] is True
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    services = sorted(p.parent.name for p in REPO_ROOT.glob("services/*/Dockerfile"))
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
        "--wait --timeout 10m",
        "helm test",
        "failure()",
    ):
        assert fragment in steps, fragment
    assert "make test" in json.dumps(jobs["lint-and-test"]["steps"])
