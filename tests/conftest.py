"""Shared fixtures: synthetic body models, an isolated plugin manager, compiled-op skips."""

from __future__ import annotations

import pytest

from meshrec.testing.fixtures import plugin_manager, requires_compiled_ops  # noqa: F401


@pytest.fixture(scope="session")
def body_models_dir(tmp_path_factory):
    """A folder of synthetic SMPL-format files laid out as users keep the licensed ones."""
    from meshrec.testing import write_synthetic_body_models

    return write_synthetic_body_models(tmp_path_factory.mktemp("body_models"), smplh=True)


@pytest.fixture
def compiled():
    """Skips tests of the compiled kernels when meshrec._C is not in use."""
    requires_compiled_ops()
