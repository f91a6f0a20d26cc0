"""Float64 parity of EgoHMR's network pieces against independent functional recomputations
(small dimensions where the structure allows), the adjacency, the 6D layouts and the camera."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec.rotations import (
    matrix_from_6d_prohmr,
    matrix_from_6d_spin,
    matrix_to_6d_prohmr,
    matrix_to_6d_spin,
    rodrigues,
)
from meshrec_egohmr.flow import ConditionalGlow
from meshrec_egohmr.layers import ResnetPointnet
from meshrec_egohmr.stage1 import FCHead, camera_features
from meshrec_egohmr.stage2 import (
    SMPL_EDGES,
    ModulatedGCN,
    ModulatedGraphConv,
    sinusoidal_table,
    smpl_adjacency,
    visibility_from_openpose,
)

TOL = 1e-10


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.dtype.is_floating_point and "dummy" not in name and name.split(".")[-1] != "adj":
                value = torch.randn(tensor.shape, generator=generator, dtype=torch.float64) * scale
                if name.endswith("running_var"):
                    value = value.abs() + 0.5
                tensor.copy_(value)
    return module.double().eval()


def _bn(x, prefix, state):
    return (x - state[prefix + ".running_mean"]) / torch.sqrt(state[prefix + ".running_var"] + 1e-5) * \
        state[prefix + ".weight"] + state[prefix + ".bias"]


def _linear(x, prefix, state):
    return x @ state[prefix + ".weight"].T + state[prefix + ".bias"]


def _glow_forward_reference(state, x, context, features, layers, blocks):
    """x -> z and log|det| of nflows' ConditionalGlow from its state dict alone."""
    logdet = torch.zeros(len(x), dtype=torch.float64)
    lower_index = np.tril_indices(features, -1)
    upper_index = np.triu_indices(features, 1)
    for layer in range(layers):
        a, lu, c = (f"_transform._transforms.{3 * layer + k}" for k in range(3))
        x = x * torch.exp(state[a + ".log_scale"]) + state[a + ".shift"]
        logdet += state[a + ".log_scale"].sum()
        lower = np.eye(features)
        lower[lower_index] = state[lu + ".lower_entries"].numpy()
        upper = np.zeros((features, features))
        upper[upper_index] = state[lu + ".upper_entries"].numpy()
        diag = np.log1p(np.exp(state[lu + ".unconstrained_upper_diag"].numpy())) + 1e-3
        upper[np.diag_indices(features)] = diag
        x = x @ torch.from_numpy(lower @ upper).T + state[lu + ".bias"]
        logdet += float(np.log(diag).sum())
        # layer 0 keeps even features, shifts odd ones; the halves swap every layer
        keep = list(range(0, features, 2)) if layer % 2 == 0 else list(range(1, features, 2))
        move = [i for i in range(features) if i not in keep]
        net = c + ".transform_net"
        h = _linear(torch.cat([x[:, keep], context], 1), net + ".initial_layer", state)
        for block in range(blocks):
            b = f"{net}.blocks.{block}"
            t = _linear(torch.relu(_bn(h, b + ".batch_norm_layers.0", state)), b + ".linear_layers.0", state)
            t = _linear(torch.relu(_bn(t, b + ".batch_norm_layers.1", state)), b + ".linear_layers.1", state)
            h = h + t
        shift = _linear(h, net + ".final_layer", state)
        x = x.clone()
        x[:, move] = x[:, move] + shift
    return x, logdet


def test_glow_log_prob_and_inverse_match_recomputation():
    features, context_features, layers, blocks = 8, 5, 3, 2
    flow = _randomise(ConditionalGlow(features, 6, layers, blocks, context_features), seed=1, scale=0.2)
    state = {k: v for k, v in flow.state_dict().items()}
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(7, features, generator=generator, dtype=torch.float64)
    context = torch.randn(7, context_features, generator=generator, dtype=torch.float64)
    z_ref, logdet_ref = _glow_forward_reference(state, x, context, features, layers, blocks)
    log_prob, z = flow.log_prob(x, context)
    expected = -0.5 * (z_ref ** 2).sum(1) - 0.5 * features * math.log(2 * math.pi) + logdet_ref
    assert (z - z_ref).abs().max() < TOL
    assert (log_prob - expected).abs().max() < TOL
    # inverse: noise -> data, including the mode z = 0; log p of the sample from both directions
    noise = torch.randn(7, 3, features, generator=generator, dtype=torch.float64)
    noise[:, 0] = 0
    data, sample_log_prob = flow.sample_and_log_prob(noise, context)
    back, _ = _glow_forward_reference(state, data.reshape(21, features), context.repeat_interleave(3, 0),
                                      features, layers, blocks)
    assert (back - noise.reshape(21, features)).abs().max() < 1e-9
    direct, _ = flow.log_prob(data.reshape(21, features), context.repeat_interleave(3, 0))
    assert (direct - sample_log_prob.reshape(-1)).abs().max() < 1e-9


def test_glow_state_dict_names_follow_the_nflows_fork():
    flow = ConditionalGlow(144, 16, 4, 2, 10)
    keys = set(flow.state_dict())
    assert "_transform.dummy_buffer" in keys
    assert {"_transform._transforms.0.log_scale", "_transform._transforms.0.shift", "_transform._transforms.0.initialized",
            "_transform._transforms.1.lower_entries", "_transform._transforms.1.unconstrained_upper_diag",
            "_transform._transforms.2.identity_features", "_transform._transforms.2.transform_features",
            "_transform._transforms.2.transform_net.initial_layer.weight",
            "_transform._transforms.2.transform_net.blocks.1.batch_norm_layers.1.running_var",
            "_transform._transforms.11.transform_net.final_layer.bias"} <= keys
    assert flow.state_dict()["_transform._transforms.1.lower_entries"].shape == (144 * 143 // 2,)
    assert flow.state_dict()["_transform._transforms.2.transform_net.initial_layer.weight"].shape == (16, 72 + 10)
    assert flow.state_dict()["_transform._transforms.2.identity_features"].tolist() == list(range(0, 144, 2))
    assert flow.state_dict()["_transform._transforms.5.identity_features"].tolist() == list(range(1, 144, 2))
    assert len(keys) == 177


def test_fresh_lulinear_is_the_identity():
    flow = ConditionalGlow(6, 4, 1, 1, 2).double()
    lower, upper = flow._transform._transforms[1].lower_upper()
    assert torch.allclose(lower @ upper, torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_pointnet_matches_recomputation():
    net = _randomise(ResnetPointnet(out_dim=5, hidden_dim=4), seed=3)
    state = net.state_dict()
    points = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def block(x, name):
        dx = _linear(torch.relu(_linear(torch.relu(x), name + ".fc_0", state)), name + ".fc_1", state)
        return x @ state[name + ".shortcut.weight"].T + dx

    h = block(_linear(points, "fc_pos_0", state), "block_0")
    for name in ("block_1", "block_2", "block_3"):
        h = block(torch.cat([h, h.max(1, keepdim=True).values.expand_as(h)], 2), name)
    expected = _linear(torch.relu(h.max(1).values), "fc_c", state)
    assert (net(points) - expected).abs().max() < TOL
    # max pooling: order and duplicated points change nothing (meshrec pads clouds by repetition)
    shuffled = points[:, torch.randperm(30)]
    padded = torch.cat([points, points[:, :1].expand(2, 10, 3)], 1)
    assert (net(shuffled) - expected).abs().max() < TOL
    assert (net(padded) - expected).abs().max() < TOL


def test_adjacency_rebuilt_from_the_smpl_tree():
    adjacency = smpl_adjacency(torch.float64)
    degree = {j: sum(j in edge for edge in SMPL_EDGES) for j in range(24)}
    assert degree[0] == 3 and degree[9] == 4 and degree[23] == 1
    for i in range(24):
        for j in range(24):
            connected = (i, j) in SMPL_EDGES or (j, i) in SMPL_EDGES
            expected = 1.0 if i == j else (1.0 / degree[i] if connected else 0.0)
            assert adjacency[i, j] == expected


def test_modulated_graph_conv_matches_per_joint_sum():
    adjacency = smpl_adjacency(torch.float64)
    conv = _randomise(ModulatedGraphConv(5, 3, adjacency), seed=5)
    x = torch.randn(2, 24, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    a = adjacency + conv.adj2.detach()
    a = (a + a.T) / 2
    expected = torch.zeros(2, 24, 3, dtype=torch.float64)
    for i in range(24):
        expected[:, i] = a[i, i] * conv.M[i] * (x[:, i] @ conv.W[0]) + conv.bias
        for j in range(24):
            if j != i:
                expected[:, i] += a[i, j] * conv.M[j] * (x[:, j] @ conv.W[1])
    assert (conv(x) - expected).abs().max() < TOL
    assert "adj" not in conv.state_dict()  # rebuilt, as upstream keeps it out of the checkpoint
    conv.float().double()  # casting the module never rounds the fixed adjacency
    assert torch.equal(conv.adj, adjacency) and (conv(x) - expected).abs().max() < 1e-6


def test_modulated_gcn_structure_and_parity():
    gcn = _randomise(ModulatedGCN(smpl_adjacency(), in_dim=7, hid_dim=4, out_dim=6, num_layers=2), seed=7)
    state = gcn.state_dict()
    x = torch.randn(3, 24, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def graph_conv(h, name):
        out = ModulatedGraphConv.forward(getattr_path(gcn, name), h)
        return out

    def getattr_path(module, path):
        for part in path.split("."):
            module = getattr(module, part) if not part.isdigit() else module[int(part)]
        return module

    def layer(h, name):
        g = graph_conv(h, name + ".gconv")
        return torch.relu(_bn(g, name + ".bn", state))

    h = layer(x, "gconv_input.0")
    for block in range(2):
        h = h + layer(layer(h, f"gconv_layers.{block}.gconv1"), f"gconv_layers.{block}.gconv2")
    expected = graph_conv(h, "gconv_output")
    assert (gcn(x) - expected).abs().max() < TOL
    assert sum(1 for k in state if not k.endswith("num_batches_tracked")) + \
        sum(1 for k in state if k.endswith("num_batches_tracked")) == 9 + 2 * 2 * 9 + 4


def test_timestep_table_is_mdm_positional_encoding():
    table = sinusoidal_table(50, 8).double()[:, 0]
    t, i = 17, 3
    angle = t / 10000 ** (2 * i / 8)
    assert abs(table[t, 2 * i] - math.sin(angle)) < 1e-7 and abs(table[t, 2 * i + 1] - math.cos(angle)) < 1e-7


def test_fc_head_offsets_the_mean_parameters():
    head = _randomise(FCHead(in_features=6, hidden=5), seed=9)
    feats = torch.randn(4, 6, dtype=torch.float64)
    state = head.state_dict()
    offset = _linear(torch.relu(_linear(feats, "layers.0", state)), "layers.2", state)
    betas, cam = head(feats)
    assert (betas - (offset[:, :10] + state["init_betas"][0])).abs().max() < TOL
    assert (cam - (offset[:, 10:] + state["init_cam"][0])).abs().max() < TOL


def test_camera_features_layout():
    focal = torch.tensor([1500.0, 1200.0], dtype=torch.float64)
    principal = torch.tensor([[960.0, 540.0], [950.0, 530.0]], dtype=torch.float64)
    centre = torch.tensor([[800.0, 600.0], [1000.0, 400.0]], dtype=torch.float64)
    size = torch.tensor([300.0, 420.0], dtype=torch.float64)
    features = camera_features(focal, principal, centre, size)
    expected = torch.tensor([[960 / 1500, 540 / 1500, 800 / 1500, 600 / 1500, 300 / 1500, 1.0],
                             [950 / 1200, 530 / 1200, 1000 / 1200, 400 / 1200, 420 / 1200, 1200 / 1500]],
                            dtype=torch.float64)
    assert (features - expected).abs().max() < 1e-15


def test_translation_uses_the_true_focal_length():
    from meshrec.camera import weak_perspective_to_translation

    cam = torch.tensor([[0.8, 0.1, -0.05]], dtype=torch.float64)
    centre = torch.tensor([[1100.0, 500.0]], dtype=torch.float64)
    size = torch.tensor([400.0], dtype=torch.float64)
    for f in (1000.0, 1460.0):
        k = torch.tensor([[[f, 0, 955.0], [0, f, 545.0], [0, 0, 1]]], dtype=torch.float64)
        t = weak_perspective_to_translation(cam, centre, size, k)[0]
        # PARE's convert_pare_to_full_img_cam with img_w = 2 cx, img_h = 2 cy
        s = 0.8
        expected = [0.1 + 2 * (1100 - 955) / (s * 400), -0.05 + 2 * (500 - 545) / (s * 400), 2 * f / (400 * s)]
        assert (t - torch.tensor(expected, dtype=torch.float64)).abs().max() < 1e-12


def test_both_6d_layouts_named_and_round_trip():
    generator = torch.Generator().manual_seed(10)
    rotations = rodrigues(torch.randn(20, 3, generator=generator, dtype=torch.float64))
    prohmr, spin = matrix_to_6d_prohmr(rotations), matrix_to_6d_spin(rotations)
    r = rotations[0]
    # stage 1 (ProHMR): column 0 then column 1; stage 2 (diffusion): R[:, :2] row by row
    assert torch.equal(prohmr[0], torch.stack([r[0, 0], r[1, 0], r[2, 0], r[0, 1], r[1, 1], r[2, 1]]))
    assert torch.equal(spin[0], torch.stack([r[0, 0], r[0, 1], r[1, 0], r[1, 1], r[2, 0], r[2, 1]]))
    assert (matrix_from_6d_prohmr(prohmr) - rotations).abs().max() < 1e-12
    assert (matrix_from_6d_spin(spin) - rotations).abs().max() < 1e-12
    # mixing them up is wrong, not an error
    assert (matrix_from_6d_spin(prohmr) - rotations).abs().max() > 1e-3


def test_stage2_decode_uses_the_diffusion_layout_and_statistics():
    from meshrec_egohmr.stage2 import EgoHMRDenoiser

    decode = EgoHMRDenoiser.decode
    holder = torch.nn.Module()
    holder.Xmean = torch.randn(144, dtype=torch.float64) * 0.1
    holder.Xstd = torch.full((144,), 0.5, dtype=torch.float64)
    rotations = rodrigues(torch.randn(2, 24, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64))
    x = (matrix_to_6d_spin(rotations).reshape(2, 144) - holder.Xmean) / holder.Xstd
    assert (decode(holder, x) - rotations).abs().max() < 1e-12


@pytest.mark.parametrize("loosen", [False, True])
def test_visibility_from_openpose(loosen):
    keypoints = torch.zeros(1, 25, 3)
    keypoints[0, [13, 10, 0], 2] = 1.0  # left knee, right knee, nose detected
    visible = visibility_from_openpose(keypoints, loosen=loosen)[0]
    assert visible[[0, 3, 6, 9]].all()  # pelvis forced visible, spine mapped to the pelvis
    assert visible[4] and visible[5] and visible[15]  # knees, head (nose)
    assert bool(visible[1]) is loosen and bool(visible[2]) is loosen  # hips follow the knees when loosened
    assert not visible[7] and not visible[18]
