"""float64 parity of the network's parts against independent functional recomputations.

Small dims (ViT 64 x 5 blocks, decoder 64 x 3 layers, 224-px input) keep these fast; the
arithmetic is the same as at full size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mahmr_checkpoints import SMALL, SMALL_OVERRIDES, synthetic_state
from meshrec.nn.vit import Block, block_diagonal_attention
from meshrec_mahmr.checkpoint import load_mahmr_network
from meshrec_mahmr.decoder import DecoderLayer

TOL = dict(rtol=0, atol=1e-10)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def linear(x, module):
    return x @ module.weight.T + module.bias


def softmax_attention(q, k, v, scale):
    """q (N, D), k (M, D), v (M, Dv): explicit softmax(q k^T * scale) v."""
    logits = (q @ k.T) * scale
    weights = torch.exp(logits - logits.max(-1, keepdim=True).values)
    return (weights / weights.sum(-1, keepdim=True)) @ v


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def mlp(x, head):
    for index, layer in enumerate(head.layers):
        x = linear(x, layer)
        if index < len(head.layers) - 1:
            x = torch.clamp(x, min=0)
    return x


@pytest.fixture(scope="module")
def network():
    state = synthetic_state(SMALL, seed=4)
    # spread the scale map across both thresholds so 14-, 28- and 56-px tokens all occur
    state["scale_head.layers.3.weight"] = state["scale_head.layers.3.weight"] * 4
    state["scale_head.layers.3.bias"] = torch.tensor([-1.0, -0.5])
    state["fov_head.layers.3.bias"] = torch.tensor([0.9])
    return load_mahmr_network(state, **SMALL_OVERRIDES).double()


def images(seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(3, 224, 224, generator=g, dtype=torch.float64)
    second = torch.zeros(3, 168, 224, dtype=torch.float64)
    second[:, :150] = torch.randn(3, 150, 224, generator=g, dtype=torch.float64)
    return [first, second], [(224, 224), (150, 224)]


def morton(y: int, x: int, bits: int = 8) -> int:
    code = 0
    for bit in range(bits):
        code |= ((x >> bit) & 1) << (2 * bit) | ((y >> bit) & 1) << (2 * bit + 1)
    return code


def test_zorder_patches_follow_the_morton_curve(network):
    image = images()[0][1]
    patches, z, ys, xs = network.zorder_patches(image)
    rows, cols = 168 // 28, 224 // 28
    expected = sorted((morton(y, x), y, x) for y in range(rows) for x in range(cols))
    assert [tuple(t) for t in zip(z.tolist(), ys.tolist(), xs.tolist())] == expected
    for index in (0, 5, len(expected) - 1):
        _, y, x = expected[index]
        torch.testing.assert_close(patches[index], image[:, 28 * y:28 * y + 28, 28 * x:28 * x + 28], rtol=0, atol=0)


def test_token_selection_matches_a_grid_recomputation(network):
    imgs, sizes = images()
    with torch.no_grad():
        enc = network.forward_encoder(imgs)
    scale_map = enc.scale_map.split(enc.scale_map_lens)
    pos_y, pos_x = (p.split(enc.scale_map_lens) for p in enc.scale_map_pos)
    seen_levels = set()
    for index, image in enumerate(imgs):
        grid = {(int(y), int(x)): (float(s[0]), float(s[1]))
                for y, x, s in zip(pos_y[index], pos_x[index], scale_map[index])}
        rows, cols = image.shape[1] // 28, image.shape[2] // 28
        expected = []  # (level, y, x) on each level's own grid
        for qy in range(rows // 2):
            for qx in range(cols // 2):
                cells = [(2 * qy + dy, 2 * qx + dx) for dy in (0, 1) for dx in (0, 1)]
                if not any(grid[c][0] > 0.3 for c in cells):
                    expected.append((2, qy, qx))
                    continue
                for y, x in cells:
                    p_human, scale = grid[(y, x)]
                    if p_human > 0.3 and scale < 0.5:
                        expected += [(0, 2 * y + dy, 2 * x + dx) for dy in (0, 1) for dx in (0, 1)]
                    else:
                        expected.append((1, y, x))
        levels = enc.levels[index]
        side = torch.tensor([16.0, 8.0, 4.0], dtype=torch.float64)[levels]
        got = sorted(zip(levels.tolist(), (enc.pos_y[index] * side - 0.5).round().long().tolist(),
                         (enc.pos_x[index] * side - 0.5).round().long().tolist()))
        assert got == sorted(expected)
        assert levels.tolist() == sorted(levels.tolist()), "tokens are ordered level 0, 1, 2"
        assert enc.lens[index] == len(expected)
        seen_levels |= set(levels.tolist())
    assert seen_levels == {0, 1, 2}, "the fixture must exercise all three token sizes"


@pytest.mark.parametrize("backend", ["mask", "loop"])
def test_encoder_block_with_block_diagonal_mask(backend, monkeypatch):
    torch.manual_seed(0)
    block = Block(32, 4).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    lens = [5, 1, 9]
    x = torch.randn(1, sum(lens), 32, dtype=torch.float64)
    import meshrec.nn.vit as vit

    monkeypatch.setattr(vit, "MASKED_CALL_LIMIT", 1 << 30 if backend == "mask" else 0)
    with torch.no_grad():
        got = block(x, lens)[0]
        expected = []
        for seq in x[0].split(lens):
            h = layer_norm(seq, block.norm1.weight, block.norm1.bias, 1e-6)
            q, k, v = linear(h, block.attn.qkv).chunk(3, dim=-1)
            heads = [softmax_attention(q[:, i * 8:(i + 1) * 8], k[:, i * 8:(i + 1) * 8], v[:, i * 8:(i + 1) * 8], 8 ** -0.5)
                     for i in range(4)]
            seq = seq + linear(torch.cat(heads, -1), block.attn.proj) * block.ls1.gamma
            h = layer_norm(seq, block.norm2.weight, block.norm2.bias, 1e-6)
            seq = seq + linear(gelu(linear(h, block.mlp.fc1)), block.mlp.fc2) * block.ls2.gamma
            expected.append(seq)
    torch.testing.assert_close(got, torch.cat(expected), **TOL)


def test_block_diagonal_attention_backends_agree():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 3, 12, 8, generator=g, dtype=torch.float64)
    k = torch.randn(1, 3, 20, 8, generator=g, dtype=torch.float64)
    v = torch.randn(1, 3, 20, 6, generator=g, dtype=torch.float64)
    a = block_diagonal_attention(q, k, v, [4, 8], [15, 5], backend="mask")
    b = block_diagonal_attention(q, k, v, [4, 8], [15, 5], backend="loop")
    torch.testing.assert_close(a, b, **TOL)
    for h in range(3):
        torch.testing.assert_close(a[0, h, :4], softmax_attention(q[0, h, :4], k[0, h, :15], v[0, h, :15], 8 ** -0.5), **TOL)
        torch.testing.assert_close(a[0, h, 4:], softmax_attention(q[0, h, 4:], k[0, h, 15:], v[0, h, 15:], 8 ** -0.5), **TOL)
    with pytest.raises(ValueError, match="lengths"):
        block_diagonal_attention(q, k, v, [4, 7], [15, 5])


@pytest.mark.parametrize("is_first", [True, False])
def test_decoder_layer(is_first):
    torch.manual_seed(2)
    C, H, Q, B = 32, 4, 3, 2
    layer = DecoderLayer(C, H, 48, with_qpos=True).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    memory_lens = [7, 4]
    memory = torch.randn(sum(memory_lens), C, dtype=torch.float64)
    pos = torch.randn_like(memory)
    tgt = torch.randn(B * Q, C, dtype=torch.float64)
    query_pos, sine = torch.randn_like(tgt), torch.randn_like(tgt)
    with torch.no_grad():
        got = layer(memory, memory_lens, pos, tgt, Q, query_pos, sine, is_first=is_first)
        D = C // H
        outputs = []
        for b, (mem, mpos) in enumerate(zip(memory.split(memory_lens), pos.split(memory_lens))):
            t = tgt[b * Q:(b + 1) * Q]
            qp, se = query_pos[b * Q:(b + 1) * Q], sine[b * Q:(b + 1) * Q]
            x = layer_norm(t, layer.norm1.weight, layer.norm1.bias, 1e-5)
            q = linear(x, layer.sa_qcontent_proj) + linear(qp, layer.sa_qpos_proj)
            k = linear(x, layer.sa_kcontent_proj) + linear(qp, layer.sa_kpos_proj)
            v = linear(x, layer.sa_v_proj)
            heads = [softmax_attention(q[:, h * D:(h + 1) * D], k[:, h * D:(h + 1) * D], v[:, h * D:(h + 1) * D], D ** -0.5)
                     for h in range(H)]
            t = t + linear(torch.cat(heads, -1), layer.sa_out_proj)
            x = layer_norm(t, layer.norm2.weight, layer.norm2.bias, 1e-5)
            q = linear(x, layer.ca_qcontent_proj)
            k = linear(mem, layer.ca_kcontent_proj)
            kp = linear(mpos, layer.ca_kpos_proj)
            if is_first:
                q = q + linear(qp, layer.ca_qpos_proj)
                k = k + kp
            qs = linear(se, layer.ca_qpos_sine_proj)
            v = linear(mem, layer.ca_v_proj)
            heads = []
            for h in range(H):
                cut = slice(h * D, (h + 1) * D)
                heads.append(softmax_attention(torch.cat([q[:, cut], qs[:, cut]], -1), torch.cat([k[:, cut], kp[:, cut]], -1),
                                               v[:, cut], (2 * D) ** -0.5))
            t = t + linear(torch.cat(heads, -1), layer.ca_out_proj)
            x = layer_norm(t, layer.norm3.weight, layer.norm3.bias, 1e-5)
            outputs.append(t + linear(torch.clamp(linear(x, layer.linear1), min=0), layer.linear2))
    torch.testing.assert_close(got, torch.cat(outputs), **TOL)


def rotmat_from_6d(six: np.ndarray) -> np.ndarray:
    """SPIN layout: the six numbers are R[:, :2] row by row; Gram-Schmidt on the two columns."""
    a = six.reshape(3, 2)
    b1 = a[:, 0] / np.linalg.norm(a[:, 0])
    a2 = a[:, 1] - b1 @ a[:, 1] * b1
    b2 = a2 / np.linalg.norm(a2)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=1)


def test_heads_intrinsics_and_translation(network):
    imgs, sizes = images(1)
    with torch.no_grad():
        out = network(imgs, sizes)
        hs, refs, enc = out["hs"], out["references"], out["encoder"]
        last = hs[-1]
        logits = mlp(last, network.bbox_embed[-1])
        r = refs[-1].clamp(0, 1)
        boxes = torch.sigmoid(logits + torch.log(r.clamp(min=1e-5) / (1 - r).clamp(min=1e-5)))
        torch.testing.assert_close(out["pred_boxes"], boxes, **TOL)
        conf = 1 / (1 + torch.exp(-linear(last, network.conf_head)))
        torch.testing.assert_close(out["pred_confs"], conf, **TOL)
        pose = network.mean_pose.double().clone()
        betas = network.mean_shape.double().clone()
        for layer in range(len(hs)):
            pose = pose + mlp(hs[layer], network.pose_head[layer])
            betas = betas + mlp(hs[layer], network.shape_head[layer])
        torch.testing.assert_close(out["pred_betas"], betas, **TOL)
        assert out["pred_betas"].shape[-1] == 11
        six = pose.numpy().reshape(2, 7, 24, 6)
        rot = np.stack([[[rotmat_from_6d(six[b, q, j]) for j in range(24)] for q in range(7)] for b in range(2)])
        np.testing.assert_allclose(out["pred_rotmats"].numpy(), rot, rtol=0, atol=1e-10)
        fov = np.maximum(mlp(enc.class_tokens, network.fov_head)[:, 0].numpy(), 0.08)
        cam = mlp(last, network.cam_head).numpy()
        for b, (h, w) in enumerate(sizes):
            f = h / (2 * math.tan(fov[b] / 2))
            K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
            np.testing.assert_allclose(out["pred_intrinsics"][b].numpy(), K, rtol=1e-12, atol=1e-9)
            s = 2 / (1 + np.exp(-cam[b, :, 2])) + 1e-6
            t = np.stack([cam[b, :, 0] / s, cam[b, :, 1] / s, 2 * f / (s * 224)], -1)
            np.testing.assert_allclose(out["pred_transl"][b].numpy(), t, rtol=0, atol=1e-10)


def test_token_quirk_keeps_level1_tokens_without_background(network):
    """MA-HMR's quirk (token_quirk=True): with no background quad in the batch, level-1 tokens of
    small-person patches are kept beside their level-0 tokens; by default (SAT-HMR) they are not."""
    from dataclasses import replace

    scale_map = torch.tensor([[0.9, 0.2], [0.9, 0.8], [0.1, 0.1], [0.1, 0.9]] * 2, dtype=torch.float64)
    default = network.select_tokens(scale_map, [8])
    assert default["sat"].tolist() == [True, False, False, False] * 2
    assert default["keep"].tolist() == [False, True, True, True] * 2
    assert not default["pool"].any()
    original = network.config
    try:
        network.config = replace(original, keep_sat_lvl1_without_background=True)
        quirk = network.select_tokens(scale_map, [8])
        assert quirk["keep"].all() and quirk["sat"].tolist() == default["sat"].tolist()
        with_background = torch.cat([scale_map, torch.zeros(4, 2, dtype=torch.float64)])
        assert network.select_tokens(with_background, [12])["keep"].tolist() == [False, True, True, True] * 2 + [False] * 4
    finally:
        network.config = original
