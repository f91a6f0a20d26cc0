"""Fixtures of the core's tests. The shared ones (synthetic body models, an isolated plugin
manager, compiled-op skips) come from meshrec's pytest plugin, meshrec.testing.fixtures."""

from __future__ import annotations

import pytest

from meshrec.testing.fixtures import requires_compiled_ops


@pytest.fixture
def compiled():
    """Skips tests of the compiled kernels when meshrec._C is not in use."""
    requires_compiled_ops()
