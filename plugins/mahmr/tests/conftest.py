"""Fixtures of the MA-HMR plugin's tests."""

from __future__ import annotations

import pytest
import torch

from mahmr_checkpoints import SMALL, synthetic_state
from meshrec.testing.fixtures import body_models_dir, plugin_manager  # noqa: F401


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """A small-dims stage-3 checkpoint (input 224, ViT 64 x 5, decoder 64 x 3, 7 queries) in the
    released layout, SMPL arrays included."""
    path = tmp_path_factory.mktemp("checkpoints") / "mahmr_stage3-small.bin"
    torch.save(synthetic_state(SMALL, seed=0), path)
    return path
