"""Fixtures of the deployment checks: kustomize (installed once per machine) and each overlay
rendered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, Rendered, kustomize_build, kustomize_path


@pytest.fixture(name="kustomize", scope="session")
def fixture_kustomize() -> Path:
    return kustomize_path()


@pytest.fixture(name="rendered_all", scope="session")
def fixture_rendered_all(kustomize: Path) -> dict[str, Rendered]:
    return {
        overlay: Rendered(overlay, kustomize_build(kustomize, K8S / "overlays" / overlay))
        for overlay in OVERLAYS
    }


@pytest.fixture(name="rendered", params=OVERLAYS)
def fixture_rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    overlay: str = request.param
    return rendered_all[overlay]
