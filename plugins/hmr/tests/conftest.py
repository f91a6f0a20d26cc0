"""Fixtures of the HMR plugin's tests."""

from __future__ import annotations

import pytest
import torch

from hmr_checkpoints import mmhuman3d_hmr_state_dict, mmhuman3d_meta


@pytest.fixture(scope="session")
def hmr_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "resnet50_hmr_gta_bt-synthetic.pth"
    torch.save({"meta": mmhuman3d_meta(), "state_dict": mmhuman3d_hmr_state_dict()}, path)
    return path
