"""Shared fixtures (from meshrec.testing.fixtures): synthetic body models, an isolated plugin
manager, compiled-op skips."""

from __future__ import annotations

import pytest

from meshrec.testing.fixtures import body_models_dir, plugin_manager, requires_compiled_ops  # noqa: F401


@pytest.fixture
def compiled():
    """Skips tests of the compiled kernels when meshrec._C is not in use."""
    requires_compiled_ops()
