"""Fixtures of the EgoHMR plugin's tests: a synthetic ``checkpoints_egohmr`` release."""

from __future__ import annotations

import pytest

from egohmr_checkpoints import write_release


@pytest.fixture(scope="session")
def egohmr_release(tmp_path_factory):
    """Folder ``checkpoints_egohmr`` with both stages (random weights, released layout)."""
    return write_release(tmp_path_factory.mktemp("egohmr"))
