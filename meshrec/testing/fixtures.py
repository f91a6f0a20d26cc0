"""meshrec's pytest plugin: fixtures, device parametrisation and skips for meshrec's and plugins' tests.

Installed with meshrec as the ``pytest11`` entry point ``meshrec``, so every test suite run
where meshrec is installed has the fixtures ``plugin_manager`` and ``body_models_dir`` without
imports. Test support only: the runtime never imports this module.
"""

from __future__ import annotations

import pytest
import torch

__all__ = ["CUDA", "DEVICES", "CodeRunningPayload", "body_models_dir", "plugin_manager", "requires_compiled_ops"]

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Parametrise tests over devices: @pytest.mark.parametrize("device", DEVICES)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


class CodeRunningPayload:
    """Something to pickle into a file that, if anything unpickled it normally, would run a shell
    command creating ``marker``: tests of the safe loaders check that they refuse it and that the
    marker never appears (a stand-in for any code a malicious file could carry)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def requires_compiled_ops() -> None:
    """Skips the calling test when meshrec._C is not in use (reference-only runs)."""
    from meshrec import extension

    if not extension.has_compiled_ops():
        pytest.skip(f"compiled ops not in use: {extension.load_error()}")


@pytest.fixture
def plugin_manager():
    """An empty plugin manager installed process-wide for one test (installed plugins hidden);
    register in-process plugins on it with ``plugin_manager.register(module, name=...)``."""
    from meshrec.plugins import PluginManager, get_plugin_manager, reset_plugin_manager

    previous = get_plugin_manager()
    manager = PluginManager(discover=False)
    reset_plugin_manager(manager)
    yield manager
    reset_plugin_manager(previous)


@pytest.fixture(scope="session")
def body_models_dir(tmp_path_factory):
    """A folder of synthetic SMPL-format files laid out as users keep the licensed ones
    (SMPL and SMPL-H of each gender, kid template, H36M and extra joint regressors)."""
    from meshrec.testing import write_synthetic_body_models

    return write_synthetic_body_models(tmp_path_factory.mktemp("body_models"), smplh=True)
