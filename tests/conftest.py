"""Shared test helpers: ../shared fixtures (skip when absent), GPU marker, system tools (fail under CI=true)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def shared_path(*parts: str) -> Path:
    """A path inside ../shared; skips the test when ../shared (or the file) is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if IN_CI:
            pytest.fail(f"{p} is missing: CI must run with ../shared beside the repo")
        pytest.skip(f"{p} not available (../shared absent)")
    return p


def require_tool(name: str, what: str = "") -> str:
    """Path of a system tool; skips when missing, FAILS under CI=true (CI installs everything)."""
    path = shutil.which(name)
    if path is None:
        msg = f"system tool {name!r} not found{': ' + what if what else ''} (install: see README 'System packages')"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_egl() -> None:
    """Skip (or fail under CI) when no headless EGL OpenGL context can be created."""
    try:
        import moderngl

        ctx = moderngl.create_standalone_context(backend="egl")
        ctx.release()
    except Exception as e:  # noqa: BLE001 - any failure means no EGL here
        if IN_CI:
            pytest.fail(f"EGL context unavailable under CI: {e}")
        pytest.skip(f"EGL context unavailable: {e}")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """2-core CI: intra-op threads fight the test process and helper threads (a 3 ms decode took 82 ms)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared_dir() -> Path:
    return shared_path()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
