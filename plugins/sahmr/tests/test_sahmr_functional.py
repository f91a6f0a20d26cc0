"""Independent float64 recomputations of SA-HMR's sub-networks (small widths, random weights), and
the scene crop / voxel features against hand-computed values on a scene with negative coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec_sahmr.metro import CPOSE
from meshrec_sahmr.rcnet import crop_near_anchors, voxel_features
from meshrec.scene import points_from_depth
from meshrec_sahmr.scene import points_in_frustum, square_box
from sahmr_synthetic import tiny_network

TOL = dict(rtol=0, atol=1e-10)


# ---- plain numpy building blocks (no torch.nn) ----------------------------------------------------

def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, module):
    w = module.weight.detach().numpy()
    return x @ w.T + (module.bias.detach().numpy() if module.bias is not None else 0.0)


def softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def loftr(layer, x, source, mask, heads):
    """LoFTR layer with linear attention, written with explicit sums over heads and positions."""
    n, length, c = x.shape
    d = c // heads
    q = linear(x, layer.q_proj).reshape(n, length, heads, d)
    k = linear(source, layer.k_proj).reshape(n, -1, heads, d)
    v = linear(source, layer.v_proj).reshape(n, -1, heads, d)
    elu1 = lambda a: np.where(a > 0, a + 1, np.exp(a))  # elu(a) + 1
    q, k = elu1(q), elu1(k)
    m = mask[:, :, None, None].astype(np.float64)
    k, v = k * m, v * m
    s = v.shape[1]
    out = np.zeros((n, length, heads, d))
    for b in range(n):
        for h in range(heads):
            kv = k[b, :, h].T @ (v[b, :, h] / s)  # (d, d)
            z = 1 / (q[b, :, h] @ k[b, :, h].sum(0) + 1e-6)
            out[b, :, h] = (q[b, :, h] @ kv) * z[:, None] * s
    message = linear(out.reshape(n, length, c), layer.merge)
    message = layer_norm(message, layer.norm1.weight.detach().numpy(), layer.norm1.bias.detach().numpy(), 1e-5)
    hidden = np.maximum(linear(np.concatenate([x, message], -1), layer.mlp[0]), 0)
    message = linear(hidden, layer.mlp[2])
    return layer_norm(message, layer.norm2.weight.detach().numpy(), layer.norm2.bias.detach().numpy(), 1e-5)


def bert_layer(layer, x, heads):
    n, length, c = x.shape
    d = c // heads
    att = layer.attention
    q, k, v = (linear(x, m).reshape(n, length, heads, d) for m in (att.self.query, att.self.key, att.self.value))
    scores = np.einsum("blhd,bshd->bhls", q, k) / math.sqrt(d)
    context = np.einsum("bhls,bshd->blhd", softmax(scores, -1), v).reshape(n, length, c)
    ln = att.output.LayerNorm
    attended = layer_norm(linear(context, att.output.dense) + x, ln.weight.detach().numpy(), ln.bias.detach().numpy(), 1e-12)
    inner = linear(attended, layer.intermediate.dense)
    from scipy.special import erf
    inner = inner * 0.5 * (1 + erf(inner / math.sqrt(2)))
    ln = layer.output.LayerNorm
    return layer_norm(linear(inner, layer.output.dense) + attended, ln.weight.detach().numpy(),
                      ln.bias.detach().numpy(), 1e-12)


def test_cpose_block_matches_a_float64_recomputation():
    torch.manual_seed(0)
    heads, tokens, points = 4, 445, 37
    block = CPOSE(19, 8, 5, heads=heads, layers=2, intermediate=12, vocab_size=7).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    features = torch.randn(2, tokens, 19, dtype=torch.float64)
    contact = torch.randn(2, points, 19, dtype=torch.float64)
    pids = torch.randint(0, 8, (2, points))
    pids[1, 20:] = 0  # padding
    mask = pids != 0
    part_of_vertex = torch.randint(0, 8, (431,))
    part_of_vertex[:7] = torch.arange(1, 8)
    membership = torch.stack([(part_of_vertex == i) for i in range(1, 8)]).double()
    part_average = membership / membership.sum(1, keepdim=True)
    with torch.no_grad():
        out_tokens, out_contact = block(features, contact, mask, pids, part_average)

    f, c, m = features.numpy(), contact.numpy(), mask.numpy()
    bert = block.bert
    positions = bert.position_embeddings.weight.detach().numpy()[:tokens]
    # Upstream quirk: the part embedding averages rows 0..430 (vertex index, no +14 joint offset).
    part_rows = np.zeros((8, positions.shape[1]))
    for part in range(1, 8):
        part_rows[part] = positions[np.where(part_of_vertex.numpy() == part)[0]].mean(0)
    hidden = linear(f, bert.img_embedding) + positions[None]
    hidden_c = linear(c, bert.img_embedding) + part_rows[pids.numpy()]
    for layer in bert.encoder.layer:
        hidden = bert_layer(layer, hidden, heads)
    for layer in bert.encoder.linear_cp:
        hidden_c = hidden_c + loftr(layer, hidden_c, hidden_c, m, heads)
    hidden = hidden + loftr(bert.encoder.loftr_layer, hidden, hidden_c, m, heads)
    expected_tokens = linear(hidden, block.cls_head) + linear(f, block.residual)
    expected_contact = linear(hidden_c, block.cls_head) + linear(c, block.residual)
    torch.testing.assert_close(out_tokens, torch.from_numpy(expected_tokens), **TOL)
    torch.testing.assert_close(out_contact, torch.from_numpy(expected_contact), **TOL)
    # The mesh stream does not see padded contact points (masked keys / values).
    changed = contact.clone()
    changed[1, 20:] += 5.0
    with torch.no_grad():
        again, _ = block(features, changed, mask, pids, part_average)
    torch.testing.assert_close(again, out_tokens, rtol=0, atol=1e-12)


def bilinear_align_corners(fmap, x, y):
    """Bilinear sample of fmap (C, H, W) at pixel (x, y), zeros outside (grid_sample, align_corners=True)."""
    channels, height, width = fmap.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(channels)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < width and 0 <= yi < height:
                out += weight * fmap[:, yi, xi]
    return out


@pytest.mark.slow
def test_rcnet_root_and_contact_path_matches_a_float64_recomputation():
    network = tiny_network(seed=5).double()
    rcnet = network.rcnet
    torch.manual_seed(1)
    image = torch.rand(1, 3, 224, 224, dtype=torch.float64)
    K = torch.tensor([[[800.0, 0.0, 320.0], [0.0, 790.0, 250.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    box = torch.tensor([[200.0, 120.0, 440.0, 360.0]], dtype=torch.float64)
    rng = np.random.default_rng(0)
    scene = torch.from_numpy(np.stack([rng.uniform(-1.5, 1.5, 6000), rng.uniform(-1.2, 1.5, 6000),
                                       rng.uniform(1.0, 5.0, 6000)], 1))
    points = points_in_frustum(scene, box[0], K[0])
    with torch.no_grad():
        out = rcnet(image, box, K, [points])

    # 1. initial root from the heatmaps (numpy)
    with torch.no_grad():
        maps = rcnet.image_branch(image)[0].numpy()
    heat, depth = maps[0], maps[1]
    v, u = np.unravel_index(np.argmax(heat), heat.shape)
    fx, fy, cx, cy = 800.0, 790.0, 320.0, 250.0
    l, t, r, b = box[0].tolist()
    px, py = u / 55 * (r - l) + l, v / 55 * (b - t) + t
    z = depth[v, u] * fx / (r - l)
    root = np.array([(px - cx) / fx * z, (py - cy) / fy * z, z])
    np.testing.assert_allclose(out.pred_c_pelvis[0, 0].numpy(), root, rtol=0, atol=1e-10)
    # 2. crop: within 1.25 m of root +- 0.5 m in z
    p = points.numpy()
    anchors = root[None] + np.array([[0, 0, -0.5], [0, 0, 0], [0, 0, 0.5]])
    near = p[(((p[:, None] - anchors[None]) ** 2).sum(-1).min(1) < 1.25 ** 2)]
    np.testing.assert_array_equal(out.c_pcFst_nearby[0].numpy(), near)
    # 3. voxels and their features
    cells = np.floor(near / 0.05).astype(np.int64)
    unique = np.unique(cells, axis=0)
    got = out.voxel_coords[:, 1:].numpy()
    np.testing.assert_array_equal(got, unique)  # sorted by (x, y, z)
    centres = unique * 0.05 + 0.025
    fmap = maps[2:34]
    expected = []
    for centre in centres:
        u_, v_ = fx * centre[0] / centre[2] + cx, fy * centre[1] / centre[2] + cy
        sample = bilinear_align_corners(fmap, (u_ - l) / (r - l) * 55, (v_ - t) / (b - t) * 55)
        expected.append(np.concatenate([root - centre, sample]))
    np.testing.assert_allclose(out.voxel_features.numpy(), np.array(expected), rtol=0, atol=1e-10)
    # 4. the vote: softmax over sigmoid(conf) (upstream quirk), weighted centre + offset
    with torch.no_grad():
        voxel_out = rcnet.contact_net(torch.from_numpy(unique).double(), torch.from_numpy(np.array(expected))).point_features.numpy()
    sig = 1 / (1 + np.exp(-voxel_out[:, 0]))
    weights = np.exp(sig) / np.exp(sig).sum()
    refined = (weights[:, None] * (centres + voxel_out[:, 1:4])).sum(0)
    np.testing.assert_allclose(out.pred_c_pelvis_refined[0, 0].numpy(), refined, rtol=0, atol=1e-10)
    # 5. contact points: every cropped point whose voxel's argmax class is not 0, with that class
    segid = voxel_out[:, 4:].argmax(1)
    lookup = {tuple(c): s for c, s in zip(unique.tolist(), segid)}
    ids = np.array([lookup[tuple(c)] for c in cells.tolist()])
    with torch.no_grad():
        result = network.mesh_from_root(image, out, generator=torch.Generator().manual_seed(0))
    n = int((ids != 0).sum())
    assert int(result.num_contact_points[0]) == n and n > 0
    chosen, chosen_ids = near[ids != 0], ids[ids != 0]
    if n <= 500:
        np.testing.assert_array_equal(result.pred_c_pcSeg[0, :n].numpy(), chosen)
        np.testing.assert_array_equal(result.pcSeg_pids[0, :n].numpy(), chosen_ids)
        assert not result.pcSeg_mask[0, n:].any()
    else:
        index = torch.randint(n, (500,), generator=torch.Generator().manual_seed(0)).numpy()
        np.testing.assert_array_equal(result.pred_c_pcSeg[0].numpy(), chosen[index])
    # 6. module 2 gets the points relative to the refined root, and the mesh is put back at it
    torch.testing.assert_close(result.pred_c_verts - result.metro["pred_verts"],
                               out.pred_c_pelvis_refined.expand(1, 6890, 3), rtol=0, atol=1e-12)


def test_scene_crop_and_voxel_features_by_hand():
    K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    box = torch.tensor([0.0, 0.0, 100.0, 100.0], dtype=torch.float64)  # x/z and y/z in [-0.5, 0.5]
    scene = torch.tensor([
        [-0.26, -0.11, 1.01],   # inside
        [-0.49, 0.49, 1.0],     # inside, near the corner
        [-0.6, 0.0, 1.0],       # left of the frustum
        [0.0, 0.0, 0.4],        # nearer than 0.5 m
        [0.0, 0.0, 13.0],       # beyond 12.5 m
        [0.3, -0.2, -2.0],      # behind the camera
        [1.2, 0.9, 3.0],        # inside (x/z = 0.4)
    ], dtype=torch.float64)
    kept = points_in_frustum(scene, box, K)
    torch.testing.assert_close(kept, scene[[0, 1, 6]], rtol=0, atol=0)
    # anchors at (0, 0, 1.5) +- 0.5 in z, radius 1.25: (1.2, 0.9, 3.0) is 1.5 m from (0, 0, 2)... and out
    anchors = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.5], [0.0, 0.0, 2.0]], dtype=torch.float64)
    assert crop_near_anchors(kept, anchors, 1.25).tolist() == [True, True, False]
    # voxel of (-0.26, -0.11, 1.01) at 5 cm: floor -> (-6, -3, 20), centre (-0.275, -0.125, 1.025)
    cells = torch.floor(kept[:1] / 0.05)
    assert cells.tolist() == [[-6.0, -3.0, 20.0]]
    centre = cells * 0.05 + 0.025
    torch.testing.assert_close(centre, torch.tensor([[-0.275, -0.125, 1.025]], dtype=torch.float64))
    # A feature map linear in the pixel position: its bilinear sample is the same linear function.
    yy, xx = torch.meshgrid(torch.arange(56.0, dtype=torch.float64), torch.arange(56.0, dtype=torch.float64), indexing="ij")
    fmap = torch.stack([2.0 * xx - 3.0 * yy + 1.0, 0.5 * xx + 0.25 * yy])
    root = torch.tensor([0.1, 0.2, 1.5], dtype=torch.float64)
    features = voxel_features(centre, root, fmap, K, box)
    u = 100 * -0.275 / 1.025 + 50     # 23.170731... px
    v = 100 * -0.125 / 1.025 + 50     # 37.804878... px
    x, y = u / 100 * 55, v / 100 * 55  # heatmap pixels (align_corners=True over the box)
    expected = [0.1 + 0.275, 0.2 + 0.125, 1.5 - 1.025, 2 * x - 3 * y + 1, 0.5 * x + 0.25 * y]
    torch.testing.assert_close(features[0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # outside the box: zero image features
    outside = voxel_features(torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64), root, fmap, K, box)
    assert outside[0, 3:].abs().max() == 0


def test_square_box_and_points_from_depth():
    torch.testing.assert_close(square_box(torch.tensor([10.0, 20.0, 50.0, 120.0])),
                               torch.tensor([30 - 57.5, 70 - 57.5, 30 + 57.5, 70 + 57.5]))
    depth = np.zeros((4, 5))
    depth[1, 3] = 2.0
    depth[2, 0] = 4.0
    depth[3, 4] = np.nan
    K = np.array([[10.0, 0, 2], [0, 20.0, 1], [0, 0, 1]])
    points = points_from_depth(depth, K)
    torch.testing.assert_close(points, torch.tensor([[(3 - 2) / 10 * 2, 0.0, 2.0], [(0 - 2) / 10 * 4, 1 / 20 * 4, 4.0]],
                                                    dtype=torch.float64))
    with pytest.raises(ValueError, match="3, 3"):
        points_from_depth(depth, np.eye(4))


def test_scene_from_a_mesh_file(tmp_path):
    from meshrec.scene import sample_mesh_points

    obj = tmp_path / "floor.obj"
    # a 1 m x 2 m quad (two triangles, one as a fan of a quad face) at y = 1.2 m, z in [2, 4]
    obj.write_text("v -0.5 1.2 2\nv 0.5 1.2 2\nv 0.5 1.2 4\nv -0.5 1.2 4\nf 1 2 3 4\n")
    points = sample_mesh_points(obj, spacing=0.1, seed=0)
    assert points.shape == (4 + 200, 3)  # vertices + area / spacing^2
    assert torch.all(points[:, 1] == torch.tensor(1.2))
    assert points[:, 0].min() >= -0.5 and points[:, 0].max() <= 0.5
    assert points[:, 2].min() >= 2 and points[:, 2].max() <= 4
    assert torch.equal(points, sample_mesh_points(obj, spacing=0.1, seed=0))
    with pytest.raises(FileNotFoundError):
        sample_mesh_points(tmp_path / "missing.obj")
