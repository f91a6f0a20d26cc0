"""meshrec.nn.vit: packed variable-length sequences equal separate dense runs; bounded caches."""

from __future__ import annotations

import pytest
import torch

import meshrec.nn.vit as vit
from meshrec.errors import CheckpointError
from meshrec_mahmr.checkpoint import load_dinov2


def test_packed_sequences_equal_separate_runs():
    torch.manual_seed(0)
    model = vit.VisionTransformer(img_size=98, patch_size=14, embed_dim=32, depth=2, num_heads=4).double().eval()
    with torch.no_grad():
        a = model.prepare_tokens(torch.randn(1, 3, 56, 70, dtype=torch.float64))
        b = model.prepare_tokens(torch.randn(1, 3, 28, 42, dtype=torch.float64))
        packed = model.forward_blocks(torch.cat([a, b], 1), [a.shape[1], b.shape[1]])
        separate = torch.cat([model.forward_blocks(a), model.forward_blocks(b)], 1)
    assert a.shape[1] == 1 + 4 * 5 and b.shape[1] == 1 + 2 * 3
    torch.testing.assert_close(packed, separate, rtol=0, atol=1e-12)


def test_mask_cache_is_bounded():
    vit._mask_cache.clear()
    for n in range(1, 40):
        vit.block_diagonal_mask([n, 3], [n + 1, 2])
    assert len(vit._mask_cache) <= 16
    mask = vit.block_diagonal_mask([2, 1], [1, 3])
    assert mask.tolist() == [[True, False, False, False], [True, False, False, False], [False, True, True, True]]


def test_dinov2_loader_is_strict():
    model = vit.VisionTransformer(img_size=56, patch_size=14, embed_dim=64, depth=1, num_heads=1)
    state = model.state_dict()
    del state["blocks.0.ls2.gamma"]
    with pytest.raises(CheckpointError, match="ls2.gamma"):
        load_dinov2(state)
