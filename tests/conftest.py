"""Shared fixtures: synthetic body models, devices, and an isolated plugin manager."""

from __future__ import annotations

import pytest

from meshrec.testing.markers import requires_compiled_ops
from meshrec.plugins import PluginManager, get_plugin_manager, reset_plugin_manager

@pytest.fixture(scope="session")
def body_models_dir(tmp_path_factory):
    """A folder of synthetic SMPL-format files laid out as users keep the licensed ones."""
    from meshrec.testing import write_synthetic_body_models

    return write_synthetic_body_models(tmp_path_factory.mktemp("body_models"), smplh=True)


@pytest.fixture
def plugin_manager():
    """An empty plugin manager installed process-wide for the test (installed plugins hidden)."""
    previous = get_plugin_manager()
    manager = PluginManager(discover=False)
    reset_plugin_manager(manager)
    yield manager
    reset_plugin_manager(previous)


@pytest.fixture
def compiled():
    """Skips tests of the compiled kernels when meshrec._C is not in use."""
    requires_compiled_ops()
