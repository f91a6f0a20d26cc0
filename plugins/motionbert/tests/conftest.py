"""Fixtures of the MotionBERT plugin's tests."""

from __future__ import annotations

import pytest

from meshrec.testing.fixtures import body_models_dir, plugin_manager  # noqa: F401
from motionbert_checkpoints import save_released_checkpoint


@pytest.fixture(scope="session")
def motionbert_checkpoint(tmp_path_factory):
    """A mesh best_epoch.bin in the released layout (random weights, real sizes)."""
    path = tmp_path_factory.mktemp("checkpoints") / "best_epoch.bin"
    save_released_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def motionbert_body_models(tmp_path_factory):
    """Synthetic body models with J_regressor_h36m_correct.npy (MotionBERT's regressor name)."""
    import shutil

    from meshrec.testing import write_synthetic_body_models

    folder = write_synthetic_body_models(tmp_path_factory.mktemp("body_models"))
    shutil.copy(folder / "J_regressor_h36m.npy", folder / "J_regressor_h36m_correct.npy")
    return folder
