"""Fixtures of the SA-HMR plugin's tests (body_models_dir / plugin_manager come from meshrec.testing)."""

from __future__ import annotations

import pytest
import torch

from sahmr_synthetic import released_layout, tiny_network, write_support


@pytest.fixture(scope="session")
def sahmr_files(tmp_path_factory):
    """(checkpoint path, support folder, the network it holds) for a small SA-HMR in the released layout."""
    folder = tmp_path_factory.mktemp("sahmr")
    network = tiny_network(seed=0)
    path = folder / "sahmr_rich_e30-synthetic.pth"
    torch.save(released_layout(network), path)
    return path, write_support(folder / "support"), network
