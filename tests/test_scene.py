"""meshrec.scene: SparseTensor, voxelisation, sparse modules against dense conv3d, SPVCNN."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meshrec import ops
from meshrec.scene import (
    SPVCNN,
    SparseBatchNorm,
    SparseConv3d,
    SparseDropout,
    SparseLeakyReLU,
    SparseReLU,
    SparseTensor,
    cat,
    devoxelize,
    points_to_voxels,
    trilinear_taps,
    voxel_indices,
    voxelize,
)
from meshrec.testing import random_voxel_coords, synthetic_scene_crop
from meshrec.testing.fixtures import DEVICES


def random_tensor(count=400, channels=4, low=-8, high=8, batch_size=3, empty_batches=(1,), seed=0,
                  dtype=torch.float64, device="cpu"):
    coords = random_voxel_coords(count, low, high, batch_size, empty_batches=empty_batches, seed=seed).to(device)
    feats = torch.randn(coords.shape[0], channels, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return SparseTensor(feats.to(device), coords)


def to_dense(tensor: SparseTensor, low: int, side: int, batch_size: int) -> torch.Tensor:
    """(B, C, side/s, side/s, side/s) dense grid of a tensor at stride s whose grid starts at low."""
    s = tensor.stride[0]
    grid = tensor.feats.new_zeros(batch_size, tensor.num_channels, side // s, side // s, side // s)
    cell = torch.div(tensor.coords[:, 1:] - low, s, rounding_mode="floor").long()
    grid[tensor.coords[:, 0].long(), :, cell[:, 0], cell[:, 1], cell[:, 2]] = tensor.feats
    return grid


def at_voxels(grid: torch.Tensor, tensor: SparseTensor, low: int) -> torch.Tensor:
    cell = torch.div(tensor.coords[:, 1:] - low, tensor.stride[0], rounding_mode="floor").long()
    return grid[tensor.coords[:, 0].long(), :, cell[:, 0], cell[:, 1], cell[:, 2]]


def dense_kernel(conv: SparseConv3d) -> torch.Tensor:
    """The conv3d weight (C_out, C_in, k, k, k) of a SparseConv3d, from its offsets."""
    offsets = ops.kernel_offsets(conv.kernel_size)
    lows = offsets.amin(0)
    weight = conv.weight.reshape(offsets.shape[0], conv.in_channels, conv.out_channels)
    dense = weight.new_zeros(conv.out_channels, conv.in_channels, *conv.kernel_size)
    index = (offsets - lows).long()
    dense[:, :, index[:, 0], index[:, 1], index[:, 2]] = weight.permute(2, 1, 0)
    return dense


# ---- SparseTensor ----------------------------------------------------------------------------------------


def test_sparse_tensor_validates_its_inputs():
    coords = random_voxel_coords(10, seed=1)
    feats = torch.randn(10, 3)
    tensor = SparseTensor(feats, coords, 2)
    assert tensor.stride == (2, 2, 2) and len(tensor) == 10 and tensor.num_channels == 3
    with pytest.raises(TypeError, match="int32 voxel coordinates"):
        SparseTensor(feats, coords.float())
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        SparseTensor(feats, coords[:, 1:])
    with pytest.raises(ValueError, match="one row per voxel"):
        SparseTensor(feats[:9], coords)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        SparseTensor(feats[:, 0], coords)
    with pytest.raises(ValueError, match="stride"):
        SparseTensor(feats, coords, 0)


def test_cat_and_add_need_the_same_voxels():
    a = random_tensor(50, 3, seed=2)
    b = a.replace_feats(torch.randn(len(a), 2, dtype=torch.float64))
    assert cat([a, b]).num_channels == 5
    assert torch.equal((a + a).feats, 2 * a.feats)
    other = random_tensor(50, 3, seed=3)
    with pytest.raises(ValueError, match="different voxels"):
        cat([a, other])
    with pytest.raises(ValueError, match="different voxels"):
        a + other


# ---- voxelisation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_voxelize_duplicates_negative_positions_and_batches(device):
    points = torch.tensor([[0.01, 0.02, 0.03], [0.04, 0.01, 0.0], [-0.01, 0.0, 0.0], [0.12, -0.3, 0.2],
                           [0.01, 0.02, 0.03], [0.01, 0.02, 0.03]], dtype=torch.float64, device=device)
    features = torch.arange(12, dtype=torch.float64, device=device).reshape(6, 2)
    batch = torch.tensor([0, 0, 0, 0, 0, 2], device=device)
    result = voxelize(points, features, voxel_size=0.05, batch=batch)
    coords = result.tensor.coords.tolist()
    assert coords == [[0, -1, 0, 0], [0, 0, 0, 0], [0, 2, -6, 4], [2, 0, 0, 0]]  # sorted, floor for negatives
    assert result.point_to_voxel.tolist() == [1, 1, 0, 2, 1, 3]
    expected = torch.tensor([[4.0, 5.0], [(0 + 2 + 8) / 3, (1 + 3 + 9) / 3], [6.0, 7.0], [10.0, 11.0]],
                            dtype=torch.float64, device=device)
    torch.testing.assert_close(result.tensor.feats, expected)
    first = voxelize(points, features, voxel_size=0.05, batch=batch, reduction="first")
    assert first.tensor.feats[1].tolist() == [0.0, 1.0]


def test_voxelize_is_independent_of_point_order():
    points, _ = synthetic_scene_crop(5000, seed=1)
    features = torch.randn(5000, 6)
    permutation = torch.randperm(5000)
    a = voxelize(points, features, voxel_size=0.05)
    b = voxelize(points[permutation], features[permutation], voxel_size=0.05)
    assert torch.equal(a.tensor.coords, b.tensor.coords)
    assert torch.equal(a.point_to_voxel[permutation], b.point_to_voxel)
    torch.testing.assert_close(a.tensor.feats, b.tensor.feats)


def test_voxelize_bad_input():
    points = torch.rand(10, 3)
    with pytest.raises(ValueError, match="one index per point"):
        voxelize(points, voxel_size=0.1, batch=torch.zeros(9, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        voxelize(points, voxel_size=0.1, batch=torch.zeros(10))
    with pytest.raises(ValueError, match="batch indices"):
        voxelize(points, voxel_size=0.1, batch=torch.full((10,), -1))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        voxelize(torch.rand(10, 4), voxel_size=0.1)
    with pytest.raises(TypeError, match="float"):
        voxelize(torch.ones(10, 3, dtype=torch.int32), voxel_size=0.1)
    with pytest.raises(ValueError, match="finite"):
        voxelize(torch.tensor([[float("nan"), 0.0, 0.0]]), voxel_size=0.1)
    with pytest.raises(ValueError, match="coarser voxel size"):
        voxelize(torch.tensor([[1e4, 0.0, 0.0]]), voxel_size=0.01)
    with pytest.raises(ValueError, match="features must have shape"):
        voxelize(points, torch.rand(9, 2), voxel_size=0.1)


# ---- modules against dense conv3d ---------------------------------------------------------------------------


def test_conv_weight_layout_and_offset_order():
    conv = SparseConv3d(2, 3, kernel_size=3)
    assert conv.weight is conv.kernel and conv.weight.shape == (27, 2, 3)
    assert SparseConv3d(2, 3, kernel_size=1).weight.shape == (2, 3)
    assert SparseConv3d(2, 3, kernel_size=2, stride=2).weight.shape == (8, 2, 3)
    assert "kernel" in dict(conv.named_parameters()) and "bias" not in dict(conv.named_parameters())
    # The voxel at +x feeds the origin through offset k = 9 * 1 + 3 * 1 + 2 = 14.
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[1.0, 0.0], [10.0, 0.0], [100.0, 0.0]]), coords)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[14, 0, 0] = 1.0  # (dx, dy, dz) = (1, 0, 0)
        conv.weight[22, 0, 1] = 1.0  # (0, 0, 1)
    out = conv(x).feats
    assert out[0].tolist() == [10.0, 100.0, 0.0]
    # 2x2x2 kernels: k = 4 dx + 2 dy + dz, reading the voxel at coarse + offset.
    down = SparseConv3d(2, 1, kernel_size=2, stride=2)
    with torch.no_grad():
        down.weight.zero_()
        down.weight[4, 0, 0] = 1.0  # dx = 1
    y = down(x)
    assert y.coords.tolist() == [[0, 0, 0, 0]] and y.feats.item() == 10.0 and y.stride == (2, 2, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_decoder_modules_equal_dense_conv3d(device):
    """submanifold (stride 1) -> strided k2 s2 -> submanifold at stride 2 -> k3 s2 -> transposed
    back up twice, against the same network in dense conv3d: negative coordinates, batch of 3 with
    an empty element, float64, forward and gradients."""
    torch.manual_seed(0)
    low, high, batch_size = -8, 8, 3
    x = random_tensor(500, 3, low, high, batch_size, seed=4, device=device)
    x.feats.requires_grad_()
    sub = SparseConv3d(3, 4, 3).double().to(device)
    down = SparseConv3d(4, 5, 2, stride=2).double().to(device)
    sub2 = SparseConv3d(5, 5, 3, bias=True).double().to(device)
    down2 = SparseConv3d(5, 6, 3, stride=2).double().to(device)
    up2 = SparseConv3d(6, 5, 3, stride=2, transposed=True).double().to(device)
    up = SparseConv3d(5, 2, 2, stride=2, transposed=True).double().to(device)
    y0 = sub(x)
    y1 = down(y0)
    y2 = sub2(y1)
    y3 = down2(y2)
    y4 = up2(y3)
    y5 = up(y2)
    assert y1.stride == (2, 2, 2) and y3.stride == (4, 4, 4) and y4.stride == (2, 2, 2) and y5.stride == (1, 1, 1)
    assert y4.coords is y2.coords and y5.coords is x.coords  # transposed outputs: the encoder's voxels, same order

    side = high - low
    d0 = F.conv3d(to_dense(x, low, side, batch_size), dense_kernel(sub), padding=1)
    torch.testing.assert_close(at_voxels(d0, y0, low), y0.feats)
    mask0 = to_dense(x.replace_feats(torch.ones(len(x), 1, dtype=torch.float64, device=device)), low, side, batch_size)
    d1 = F.conv3d(d0 * mask0, dense_kernel(down), stride=2)
    torch.testing.assert_close(at_voxels(d1, y1, low), y1.feats)
    mask1 = to_dense(y1.replace_feats(torch.ones(len(y1), 1, dtype=torch.float64, device=device)), low, side, batch_size)
    d2 = F.conv3d(d1 * mask1, dense_kernel(sub2), sub2.bias, padding=1)
    torch.testing.assert_close(at_voxels(d2, y2, low), y2.feats)
    d3 = F.conv3d(d2 * mask1, dense_kernel(down2), stride=2, padding=1)
    torch.testing.assert_close(at_voxels(d3, y3, low), y3.feats)
    # Transposed k3 s2: output fine voxel u reads coarse v with u = v + offset (offsets of the
    # fine grid), i.e. conv_transpose3d with padding 1 on the coarse grid.
    mask3 = to_dense(y3.replace_feats(torch.ones(len(y3), 1, dtype=torch.float64, device=device)), low, side, batch_size)
    d4 = F.conv_transpose3d(d3 * mask3, dense_kernel(up2).transpose(0, 1), stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(at_voxels(d4, y4, low), y4.feats)
    d5 = F.conv_transpose3d(d2 * mask1, dense_kernel(up).transpose(0, 1), stride=2)
    torch.testing.assert_close(at_voxels(d5, y5, low), y5.feats)

    upstream = (torch.randn_like(y4.feats), torch.randn_like(y5.feats))
    params = [x.feats, sub.weight, down.weight, sub2.weight, sub2.bias, down2.weight, up2.weight, up.weight]
    grads = torch.autograd.grad((y4.feats, y5.feats), params, upstream)
    dense_grads = torch.autograd.grad((at_voxels(d4, y4, low), at_voxels(d5, y5, low)), params, upstream)
    for got, want in zip(grads, dense_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_voxelize_then_conv_equals_dense_pooling_and_conv3d(device):
    """Points with many duplicates per voxel, negative positions, two batch elements: voxelise
    (mean) + submanifold conv against a dense grid averaged with index_add and conv3d, forward
    and the gradient with respect to the point features."""
    generator = torch.Generator().manual_seed(9)
    low, side = -4, 8
    points = (torch.rand(900, 3, generator=generator, dtype=torch.float64) * side + low).to(device)
    points = torch.cat([points, torch.floor(points[:300]) + 0.5])  # more points in the same voxels
    batch = torch.randint(0, 2, (points.shape[0],), generator=generator).to(device)
    features = torch.randn(points.shape[0], 3, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    conv = SparseConv3d(3, 4, 3).double().to(device)
    y = conv(voxelize(points, features, batch=batch).tensor)

    cell = (torch.floor(points) - low).long()
    flat = ((batch * side + cell[:, 0]) * side + cell[:, 1]) * side + cell[:, 2]
    total = features.new_zeros(2 * side**3, 3).index_add(0, flat, features)
    count = torch.bincount(flat, minlength=2 * side**3).to(features.dtype)
    grid = (total / count.clamp(min=1)[:, None]).reshape(2, side, side, side, 3).permute(0, 4, 1, 2, 3)
    dense = F.conv3d(grid, dense_kernel(conv), padding=1)
    expected = at_voxels(dense, y, low)
    torch.testing.assert_close(y.feats, expected)
    upstream = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(y.feats, features, upstream)
    (dense_grad,) = torch.autograd.grad(expected, features, upstream)
    torch.testing.assert_close(grad, dense_grad)


def test_modules_compose_with_sequential():
    net = nn.Sequential(
        SparseConv3d(4, 8), SparseBatchNorm(8), SparseReLU(inplace=True),
        SparseConv3d(8, 8, 2, stride=2), SparseLeakyReLU(0.1), SparseDropout(0.5),
        SparseConv3d(8, 4, 2, stride=2, transposed=True), SparseConv3d(4, 2, 1),
    ).double()
    x = random_tensor(300, 4, seed=5)
    out = net.eval()(x)
    assert out.coords is x.coords and out.feats.shape == (len(x), 2) and out.stride == (1, 1, 1)
    net.train()(x).feats.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_modules_run_under_torch_compile():
    """Maps are built in Python dicts on the tensor; torch.compile traces around them (the ops
    have fake kernels with unbacked sizes) and gives the eager result."""
    net = nn.Sequential(
        SparseConv3d(4, 8), SparseBatchNorm(8), SparseReLU(),
        SparseConv3d(8, 8, 2, stride=2), SparseConv3d(8, 4, 2, stride=2, transposed=True),
    ).eval()
    coords = random_voxel_coords(300, seed=6)
    feats = torch.randn(len(coords), 4)
    compiled = torch.compile(lambda f, c: net(SparseTensor(f, c)).feats, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(feats, coords), net(SparseTensor(feats, coords)).feats)


def test_transposed_conv_without_its_downsampling_map_raises():
    x = random_tensor(100, 4, seed=6)
    coarse = SparseTensor(torch.randn(5, 4), random_voxel_coords(5, seed=1) * 2, 2)
    with pytest.raises(ValueError, match="matching downsampling convolution"):
        SparseConv3d(4, 4, 2, stride=2, transposed=True)(coarse)
    down = SparseConv3d(4, 4, 2, stride=2, rounding="trunc").double()(x)
    with pytest.raises(ValueError, match="rounding='floor'"):
        SparseConv3d(4, 4, 2, stride=2, transposed=True).double()(down)
    with pytest.raises(ValueError, match="same rounding"):
        SparseConv3d(4, 4, 3, stride=2).double()(x)


def strided_oracle(tensor: SparseTensor, weight: torch.Tensor, rounding: str) -> dict:
    """torchsparse 1.4's k2 s2 convolution written out voxel by voxel: the output voxels are the
    inputs divided by 2 (floor or truncation) times 2, and output u reads input u + (dx, dy, dz)
    with weight k = 4 dx + 2 dy + dz."""
    rows = {tuple(c): i for i, c in enumerate(tensor.coords.tolist())}

    def divide(c):
        return math.floor(c / 2) * 2 if rounding == "floor" else int(c / 2) * 2

    outputs = sorted({(b, divide(x), divide(y), divide(z)) for b, x, y, z in rows})
    result = {}
    for b, x, y, z in outputs:
        value = torch.zeros(weight.shape[2], dtype=weight.dtype)
        for dx, dy, dz in itertools.product((0, 1), repeat=3):
            row = rows.get((b, x + dx, y + dy, z + dz))
            if row is not None:
                value += tensor.feats[row] @ weight[4 * dx + 2 * dy + dz]
        result[(b, x, y, z)] = value
    return result


@pytest.mark.parametrize("rounding", ["floor", "trunc"])
def test_downsampling_rounding_modes_match_torchsparse_semantics(rounding):
    x = random_tensor(300, 3, -5, 5, 2, empty_batches=(), seed=7)
    conv = SparseConv3d(3, 2, 2, stride=2, rounding=rounding).double()
    y = conv(x)
    expected = strided_oracle(x, conv.weight.detach(), rounding)
    assert [tuple(c) for c in y.coords.tolist()] == list(expected)
    torch.testing.assert_close(y.feats.detach(), torch.stack(list(expected.values())))


def test_truncation_skips_negative_fine_voxels_like_torchsparse():
    # Voxel x = -1 truncates to coarse 0, whose taps are x = 0, 1: nothing reads it (the pitfall
    # SA-HMR's weights were trained with); flooring puts it in coarse -2.
    # (Each tensor starts its own cache: one pass rounds one way.)
    coords = torch.tensor([[0, -1, 0, 0]], dtype=torch.int32)
    trunc = SparseConv3d(1, 1, 2, stride=2, rounding="trunc")
    floor = SparseConv3d(1, 1, 2, stride=2)
    with torch.no_grad():
        trunc.weight.fill_(1.0)
        floor.weight.fill_(1.0)
    truncated = trunc(SparseTensor(torch.ones(1, 1), coords))
    floored = floor(SparseTensor(torch.ones(1, 1), coords))
    assert truncated.coords.tolist() == [[0, 0, 0, 0]] and truncated.feats.item() == 0.0
    assert floored.coords.tolist() == [[0, -2, 0, 0]] and floored.feats.item() == 1.0


# ---- point <-> voxel ---------------------------------------------------------------------------------------


def test_trilinear_taps_at_voxel_corners_and_inside_cells():
    x = random_tensor(300, 2, -4, 4, 1, empty_batches=(), seed=8)
    points = x.coords[:, 1:].double()
    indices, weights = trilinear_taps(x, points)
    assert torch.equal(indices[:, 0], torch.arange(len(x), dtype=torch.int32))
    torch.testing.assert_close(weights[:, 0], torch.full((len(x),), 1 / (1 + 1e-8), dtype=torch.float64))
    assert torch.equal(weights[:, 1:], torch.zeros_like(weights[:, 1:]))
    torch.testing.assert_close(devoxelize(x, points), x.feats, rtol=1e-7, atol=0)

    # A linear field on a full grid is interpolated exactly (all 8 corners present), at stride 2.
    grid = torch.stack(torch.meshgrid(*[torch.arange(-6, 8, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(len(grid), 1, dtype=torch.long), grid], 1).int()
    field = lambda p: 0.5 * p[:, :1] - 2 * p[:, 1:2] + 3 * p[:, 2:] + 1  # noqa: E731
    coarse = SparseTensor(field(grid.double()), coords, 2)
    inside = torch.rand(200, 3, dtype=torch.float64) * 11 - 5.5
    torch.testing.assert_close(devoxelize(coarse, inside), field(inside) / (1 + 1e-8))


def test_trilinear_weights_renormalise_over_present_corners():
    coords = torch.tensor([[0, 0, 0, 0], [0, 2, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[1.0], [3.0]], dtype=torch.float64), coords, 2)
    point = torch.tensor([[0.5, 1.0, 1.0]], dtype=torch.float64)
    indices, weights = trilinear_taps(x, point)
    assert indices.tolist() == [[0, -1, -1, -1, 1, -1, -1, -1]]
    # Unnormalised corner weights 0.75 * 0.5 * 0.5 and 0.25 * 0.5 * 0.5 -> 0.75, 0.25 after renormalising.
    torch.testing.assert_close(weights[0, [0, 4]], torch.tensor([0.75, 0.25], dtype=torch.float64) / (1 + 1e-8))
    torch.testing.assert_close(devoxelize(x, point), torch.tensor([[1.5]], dtype=torch.float64) / (1 + 1e-8))


def test_points_to_voxels_averages_per_coarse_voxel():
    coords = torch.tensor([[0, -2, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.zeros(3, 1), coords, 2)
    points = torch.tensor([[-1.5, 0.2, 1.0], [-0.1, 1.9, 0.5], [0.3, 0.3, 0.3], [0.1, 0.1, 0.1], [9.0, 9.0, 9.0]])
    batch = torch.tensor([0, 0, 0, 1, 0])
    assert voxel_indices(x, points, batch).tolist() == [0, 0, 1, 2, -1]
    out = points_to_voxels(x, points, torch.tensor([[1.0], [3.0], [5.0], [7.0], [100.0]]), batch)
    assert out.feats.flatten().tolist() == [2.0, 5.0, 7.0] and out.coords is coords


# ---- SPVCNN ------------------------------------------------------------------------------------------------------


def bn_shapes(prefix: str, channels: int) -> dict:
    shapes = {f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def residual_shapes(prefix: str, a: int, b: int) -> dict:
    shapes = {f"{prefix}.net.0.kernel": (27, a, b), **bn_shapes(f"{prefix}.net.1", b),
              f"{prefix}.net.3.kernel": (27, b, b), **bn_shapes(f"{prefix}.net.4", b)}
    if a != b:
        shapes.update({f"{prefix}.downsample.0.kernel": (a, b), **bn_shapes(f"{prefix}.downsample.1", b)})
    return shapes


def sahmr_contact_net_layout() -> dict:
    """Every key and shape of SA-HMR's net.rcnet.contact_net.* (shared/reference/sahmr.md §3),
    written out from that description rather than from meshrec's module."""
    shapes = {"fc_in.weight": (35, 35), "fc_in.bias": (35,), "stem.0.kernel": (27, 35, 32), **bn_shapes("stem.1", 32),
              "stem.3.kernel": (27, 32, 32), **bn_shapes("stem.4", 32)}
    for stage, (c, b) in enumerate([(32, 32), (32, 64), (64, 128), (128, 256)], start=1):
        shapes[f"stage{stage}.0.net.0.kernel"] = (8, c, c)
        shapes.update(bn_shapes(f"stage{stage}.0.net.1", c))
        shapes.update(residual_shapes(f"stage{stage}.1", c, b))
        shapes.update(residual_shapes(f"stage{stage}.2", b, b))
    for level, (a, b, skip) in enumerate([(256, 256, 128), (256, 128, 64), (128, 96, 32), (96, 96, 32)], start=1):
        shapes[f"up{level}.0.net.0.kernel"] = (8, a, b)
        shapes.update(bn_shapes(f"up{level}.0.net.1", b))
        shapes.update(residual_shapes(f"up{level}.1.0", b + skip, b))
        shapes.update(residual_shapes(f"up{level}.1.1", b, b))
    shapes.update({"classifier.0.weight": (12, 96), "classifier.0.bias": (12,)})
    for index, (a, b) in enumerate([(32, 256), (256, 128), (128, 96)]):
        shapes.update({f"point_transforms.{index}.0.weight": (b, a), f"point_transforms.{index}.0.bias": (b,)})
        shapes.update(bn_shapes(f"point_transforms.{index}.1", b))
    return shapes


def test_sahmr_contact_net_checkpoint_loads_strictly():
    layout = sahmr_contact_net_layout()
    generator = torch.Generator().manual_seed(0)
    checkpoint = {
        f"net.rcnet.contact_net.{key}": (torch.randint(0, 100, shape, generator=generator) if key.endswith("tracked")
                                         else torch.randn(shape, generator=generator))
        for key, shape in layout.items()
    }
    model = SPVCNN()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    prefix = "net.rcnet.contact_net."
    state = {key[len(prefix):]: value for key, value in checkpoint.items() if key.startswith(prefix)}
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.stem[0].weight, checkpoint[prefix + "stem.0.kernel"])
    assert torch.equal(model.up1[1][0].downsample[0].weight, checkpoint[prefix + "up1.1.0.downsample.0.kernel"])
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(21.8e6, rel=0.01)


def spvcnn_inputs(num_points=3000, seed=0, dtype=torch.float32):
    points, anchor = synthetic_scene_crop(num_points, seed=seed)
    voxels = voxelize(points, voxel_size=0.05).tensor
    coords = voxels.coords[:, 1:].to(dtype)
    generator = torch.Generator().manual_seed(seed)
    features = torch.cat([anchor / 0.05 - coords, torch.randn(len(coords), 32, generator=generator, dtype=dtype)], 1)
    return coords, features


def test_spvcnn_forward_is_per_point_deterministic_and_order_independent():
    model = SPVCNN().eval()
    points, features = spvcnn_inputs()
    with torch.no_grad():
        out = model(points, features)
        again = model(points, features)
        permutation = torch.randperm(len(points))
        shuffled = model(points[permutation], features[permutation])
    assert out.point_features.shape == (len(points), 12) and torch.isfinite(out.point_features).all()
    assert out.voxels.num_channels == 96 and out.point_to_voxel.shape == (len(points),)
    assert torch.equal(out.point_features, again.point_features)  # bitwise, run to run
    torch.testing.assert_close(shuffled.point_features, out.point_features[permutation], atol=1e-4, rtol=1e-4)


def test_spvcnn_batch_elements_are_independent():
    model = SPVCNN(8, 5, channel_ratio=0.25).double().eval()
    a_points, a_features = spvcnn_inputs(2000, seed=1, dtype=torch.float64)
    b_points, b_features = spvcnn_inputs(2000, seed=2, dtype=torch.float64)
    a_features, b_features = a_features[:, :8], b_features[:, :8]
    with torch.no_grad():
        joint = model(torch.cat([a_points, b_points]), torch.cat([a_features, b_features]),
                      torch.cat([torch.zeros(len(a_points)), torch.full((len(b_points),), 2)]).long())
        alone = [model(a_points, a_features), model(b_points, b_features)]
    expected = torch.cat([alone[0].point_features, alone[1].point_features])
    torch.testing.assert_close(joint.point_features, expected, atol=1e-12, rtol=1e-12)


def test_spvcnn_compiled_kernels_match_the_reference(monkeypatch, compiled):
    model = SPVCNN(6, 4, channel_ratio=0.5).double().eval()
    points, features = spvcnn_inputs(2000, seed=3, dtype=torch.float64)
    features = features[:, :6]
    with torch.no_grad():
        out = model(points, features)
        monkeypatch.setattr(ops.sparse, "use_compiled", lambda tensor: False)
        expected = model(points, features)
    torch.testing.assert_close(out.point_features, expected.point_features, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.voxels.feats, expected.voxels.feats, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("rounding", ["floor", "trunc"])
def test_spvcnn_trains_in_both_rounding_modes(rounding):
    model = SPVCNN(8, 3, channel_ratio=0.25, rounding=rounding).train()
    points, features = spvcnn_inputs(1500, seed=4)
    points = points - points.mean(0).round()  # straddle the origin: negative coordinates
    out = model(points, features[:, :8])
    out.point_features.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stem[0].weight.grad.abs().sum() > 0
