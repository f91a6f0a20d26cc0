"""meshrec.nn.hrnet: shapes, upstream key names, and the skipped fusions of the head-less variant."""

from __future__ import annotations

import pytest
import torch

from meshrec.nn.hrnet import HRNet, hrnet_w64


def small(head):
    torch.manual_seed(0)
    return HRNet(width=4, num_modules=(1, 2, 1), num_blocks=1, head=head, head_channels=(2, 4, 8, 16),
                 final_channels=12, num_classes=3, stem_channels=8).double().eval()


def test_output_shapes_and_names():
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    assert small(False)(x).shape == (2, 4, 16, 24)
    assert small(True)(x).shape == (2, 12, 2, 3)
    with torch.device("meta"):
        keys = hrnet_w64(head=True).state_dict()
    assert len(keys) == 1956 and len([k for k in keys if not k.startswith(("incre", "downsamp", "final", "classifier"))]) == 1830
    for name in ("transition1.0.0.weight", "transition2.2.0.0.weight", "transition3.3.0.0.weight",
                 "stage4.2.fuse_layers.3.0.2.1.running_var", "stage3.3.branches.2.3.bn2.weight", "layer1.0.downsample.0.weight",
                 "incre_modules.3.0.downsample.1.bias", "downsamp_modules.2.0.bias", "final_layer.1.weight", "classifier.bias"):
        assert name in keys, name
    assert "transition1.2.0.weight" not in keys and "stage2.0.fuse_layers.0.0.weight" not in keys


def test_headless_last_module_skips_only_unused_fusions():
    """Without the head only branch 0 of the last fusion is computed; it equals the full fusion's."""
    net = small(False)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        out = net(x)
        # recompute with every fusion of the last module
        module = net.stage4[-1]
        original = module.forward
        module.forward = lambda xs, outputs=None: original(xs, None)
        full = net(x)
        module.forward = original
    torch.testing.assert_close(out, full, rtol=0, atol=0)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small(False)(torch.zeros(1, 1, 32, 32, dtype=torch.float64))
