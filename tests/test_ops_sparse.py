"""The sparse-voxel ops: compiled kernels against the pure-PyTorch reference and dense conv3d,
gradients, op checks, torch.compile, determinism and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from meshrec import ops
from meshrec.ops import reference
from meshrec.ops.reference import sparse as sparse_reference
from meshrec.testing import random_voxel_coords
from meshrec.testing.fixtures import DEVICES

DTYPES = [torch.float32, torch.float64]


def sorted_unique(coords: torch.Tensor) -> torch.Tensor:
    return torch.unique(coords.long(), dim=0).int()


def conv_problem(count=300, channels=(5, 7), kernel_size=3, batch_size=2, low=-6, high=6, dtype=torch.float64,
                 device="cpu", seed=0, empty_batches=(1,)):
    coords = random_voxel_coords(count, low, high, batch_size, empty_batches=empty_batches, seed=seed).to(device)
    offsets = ops.kernel_offsets(kernel_size, device=device)
    neighbors = ops.kernel_map(coords, coords, offsets)
    reverse = ops.invert_kernel_map(neighbors, coords.shape[0])
    generator = torch.Generator().manual_seed(seed + 1)
    features = torch.randn(coords.shape[0], channels[0], generator=generator, dtype=dtype).to(device)
    weight = torch.randn(offsets.shape[0], *channels, generator=generator, dtype=dtype).to(device)
    return coords, offsets, neighbors, reverse, features, weight


# ---- kernel offsets ------------------------------------------------------------------------------


def test_kernel_offsets_follow_torchsparse_order():
    offsets = ops.kernel_offsets(3)
    assert offsets.shape == (27, 3) and offsets.dtype == torch.int32
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                assert offsets[9 * (dz + 1) + 3 * (dy + 1) + (dx + 1)].tolist() == [dx, dy, dz]
    assert offsets[13].tolist() == [0, 0, 0]
    even = ops.kernel_offsets(2)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                assert even[4 * dx + 2 * dy + dz].tolist() == [dx, dy, dz]
    assert ops.kernel_offsets(1).tolist() == [[0, 0, 0]]
    assert ops.kernel_offsets(3, tensor_stride=4, dilation=2)[0].tolist() == [-8, -8, -8]
    assert ops.kernel_offsets(2, tensor_stride=(1, 2, 4))[7].tolist() == [1, 2, 4]
    assert ops.kernel_offsets(4)[0].tolist() == [-1, -1, -1]  # torchsparse's arange(-2 + 1, 3)


# ---- unique voxels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride, rounding", [(1, "floor"), (2, "floor"), ((2, 4, 1), "floor"), (2, "trunc"), (3, "trunc")])
def test_unique_coords_matches_reference_and_sorts(compiled, device, stride, rounding):
    coords = random_voxel_coords(2000, -20, 20, 3, seed=1).to(device)
    coords = torch.cat([coords, coords[:300]])  # duplicates
    unique, inverse = ops.unique_coords(coords, stride, rounding=rounding)
    expected, expected_inverse = reference.unique_coords(coords, ops.sparse.triple(stride, "s"), rounding == "trunc")
    assert torch.equal(unique, expected) and torch.equal(inverse, expected_inverse)
    assert torch.equal(unique, sorted_unique(unique))  # sorted by (batch, x, y, z), unique
    s = torch.tensor(ops.sparse.triple(stride, "s"), device=device)
    division = torch.div(coords[:, 1:].long(), s, rounding_mode="trunc" if rounding == "trunc" else "floor") * s
    assert torch.equal(unique[inverse][:, 1:].long(), division)
    assert torch.equal(unique[inverse][:, 0], coords[:, 0])


def test_floor_and_truncation_differ_only_for_negative_coordinates():
    coords = torch.tensor([[0, -1, 0, 0], [0, -2, 0, 0], [0, -3, 1, 1], [0, 1, 1, 1], [0, 3, 0, 0]], dtype=torch.int32)
    floor, floor_inverse = ops.unique_coords(coords, 2)
    trunc, trunc_inverse = ops.unique_coords(coords, 2, rounding="trunc")
    assert floor[floor_inverse][:, 1].tolist() == [-2, -2, -4, 0, 2]
    assert trunc[trunc_inverse][:, 1].tolist() == [0, -2, -2, 0, 2]


def test_unique_coords_empty_and_one():
    for n in (0, 1):
        coords = random_voxel_coords(n, seed=3)
        unique, inverse = ops.unique_coords(coords)
        assert unique.shape == (n, 4) and inverse.shape == (n,)


# ---- kernel maps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (2, 1), (1, 1), (3, 2), ((3, 1, 2), 1)])
def test_kernel_map_matches_reference(compiled, device, kernel_size, dilation):
    coords = random_voxel_coords(1500, -10, 10, 3, empty_batches=(1,), seed=2).to(device)
    offsets = ops.kernel_offsets(kernel_size, 1, dilation, device=device)
    submanifold = ops.kernel_map(coords, coords, offsets)
    assert torch.equal(submanifold, reference.kernel_map(coords, coords, offsets))
    coarse, _ = ops.unique_coords(coords, 2)
    strided = ops.kernel_map(coords, coarse, offsets)
    assert torch.equal(strided, reference.kernel_map(coords, coarse, offsets))
    # Every hit really is the neighbour: same batch, displaced by the offset.
    rows, ks = (strided >= 0).nonzero(as_tuple=True)
    neighbour = coords[strided[rows, ks].long()]
    assert torch.equal(neighbour[:, 0], coarse[rows, 0])
    assert torch.equal(neighbour[:, 1:], coarse[rows, 1:] + offsets[ks])


def test_submanifold_map_is_symmetric_with_identity_centre():
    coords = random_voxel_coords(800, -6, 6, 2, seed=4)
    neighbors = ops.kernel_map(coords, coords, ops.kernel_offsets(3))
    assert torch.equal(neighbors[:, 13], torch.arange(coords.shape[0], dtype=torch.int32))
    rows, ks = (neighbors >= 0).nonzero(as_tuple=True)
    assert torch.equal(neighbors[neighbors[rows, ks].long(), 26 - ks], rows.int())


@pytest.mark.parametrize("device", DEVICES)
def test_invert_kernel_map(compiled, device):
    coords = random_voxel_coords(500, -6, 6, 2, seed=5).to(device)
    coarse, _ = ops.unique_coords(coords, 2)
    neighbors = ops.kernel_map(coords, coarse, ops.kernel_offsets(2, device=device))
    reverse = ops.invert_kernel_map(neighbors, coords.shape[0])
    assert torch.equal(reverse, reference.invert_kernel_map(neighbors, coords.shape[0]))
    # With a 2x2x2 kernel at stride 2 every input voxel has exactly one coarse parent.
    assert torch.equal((reverse >= 0).sum(1), torch.ones(coords.shape[0], dtype=torch.long, device=device))


def test_kernel_map_with_negative_and_extreme_coordinates():
    low, high = sparse_reference.COORD_MIN, sparse_reference.COORD_MAX
    coords = torch.tensor([[0, low, low, low], [0, low + 1, low, low], [0, high, high, high], [4095, high, 0, -1]],
                          dtype=torch.int32)
    neighbors = ops.kernel_map(coords, coords, ops.kernel_offsets(3))
    assert torch.equal(neighbors, reference.kernel_map(coords, coords, ops.kernel_offsets(3)))
    assert neighbors[0, 14] == 1 and neighbors[1, 12] == 0  # +x and -x neighbours
    assert (neighbors[2] >= 0).sum() == 1  # its neighbours lie outside the range: misses, not errors


# ---- convolution: reference, dense conv3d, gradients --------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [(1, 1), (5, 7), (16, 16), (35, 32), (64, 96), (19, 130)])
def test_conv_matches_reference(compiled, device, dtype, channels):
    _, _, neighbors, reverse, features, weight = conv_problem(600, channels, dtype=dtype, device=device)
    out = ops.sparse_conv(features, weight, neighbors, reverse)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out, reference.sparse_conv(features, weight, neighbors), atol=tolerance * channels[0],
                               rtol=tolerance)


def dense_grid(coords, features, low, side, batch_size):
    grid = features.new_zeros(batch_size, features.shape[1], side, side, side)
    xyz = (coords[:, 1:] - low).long()
    grid[coords[:, 0].long(), :, xyz[:, 0], xyz[:, 1], xyz[:, 2]] = features
    return grid


def dense_weight(weight, offsets, dilation=1):
    """(K, C_in, C_out) with offsets -> conv3d weight (C_out, C_in, kx, ky, kz) over the offset box."""
    lows = offsets.amin(0)
    spans = ((offsets.amax(0) - lows) // dilation + 1).tolist()
    dense = weight.new_zeros(weight.shape[2], weight.shape[1], *spans)
    index = ((offsets - lows) // dilation).long()
    dense[:, :, index[:, 0], index[:, 1], index[:, 2]] = weight.permute(2, 1, 0)
    return dense, lows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (2, 1), (3, 2), (1, 1), ((1, 3, 2), 1)])
def test_submanifold_conv_equals_dense_conv3d(compiled, device, kernel_size, dilation):
    low, high, batch_size = -6, 6, 3
    coords, offsets, neighbors, reverse, features, weight = conv_problem(
        500, (4, 6), kernel_size, batch_size, low, high, torch.float64, device
    )
    if dilation != 1:
        offsets = ops.kernel_offsets(kernel_size, 1, dilation, device=device)
        neighbors = ops.kernel_map(coords, coords, offsets)
        reverse = ops.invert_kernel_map(neighbors, coords.shape[0])
    features.requires_grad_()
    weight.requires_grad_()
    out = ops.sparse_conv(features, weight, neighbors, reverse)

    side = high - low
    w_dense, lows = dense_weight(weight, offsets, dilation)
    highs = offsets.amax(0)
    grid = dense_grid(coords, features, low, side, batch_size)
    padding = [p for axis in (2, 1, 0) for p in (-int(lows[axis]), int(highs[axis]))]
    dense_out = F.conv3d(F.pad(grid, padding), w_dense, dilation=dilation)
    xyz = (coords[:, 1:] - low).long()
    expected = dense_out[coords[:, 0].long(), :, xyz[:, 0], xyz[:, 1], xyz[:, 2]]
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)

    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (features, weight), upstream)
    dense_grads = torch.autograd.grad(expected, (features, weight), upstream)
    for got, want in zip(grads, dense_grads):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_strided_and_transposed_conv_equal_dense(compiled, device, kernel_size):
    # Even grid origin: the coarse cells of floor division line up with conv3d's stride-2 windows.
    low, high, batch_size = -8, 8, 3
    coords = random_voxel_coords(700, low, high, batch_size, empty_batches=(1,), seed=7).to(device)
    coarse, _ = ops.unique_coords(coords, 2)
    offsets = ops.kernel_offsets(kernel_size, device=device)
    neighbors = ops.kernel_map(coords, coarse, offsets)
    reverse = ops.invert_kernel_map(neighbors, coords.shape[0])
    generator = torch.Generator().manual_seed(8)
    features = torch.randn(coords.shape[0], 3, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    weight = torch.randn(offsets.shape[0], 3, 5, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    down = ops.sparse_conv(features, weight, neighbors, reverse)

    side = high - low
    grid = dense_grid(coords, features, low, side, batch_size)
    w_dense, lows = dense_weight(weight, offsets)
    padding = [p for axis in (2, 1, 0) for p in (-int(lows[axis]), int(offsets.amax(0)[axis]))]
    dense_down = F.conv3d(F.pad(grid, padding), w_dense, stride=2)
    cell = ((coarse[:, 1:] - low) // 2).long()
    expected = dense_down[coarse[:, 0].long(), :, cell[:, 0], cell[:, 1], cell[:, 2]]
    torch.testing.assert_close(down, expected, atol=1e-12, rtol=1e-12)

    # The transposed convolution reuses the map with the tables swapped: back onto the fine voxels.
    coarse_features = torch.randn(coarse.shape[0], 5, generator=generator, dtype=torch.float64).to(device)
    coarse_features.requires_grad_()
    up_weight = torch.randn(offsets.shape[0], 5, 2, generator=generator, dtype=torch.float64).to(device)
    up_weight.requires_grad_()
    up = ops.sparse_conv(coarse_features, up_weight, reverse, neighbors)
    if kernel_size == 2:
        coarse_grid = dense_grid(coarse, coarse_features, low, side, batch_size)[:, :, ::2, ::2, ::2]
        w_up, _ = dense_weight(up_weight, offsets)  # (C_out, C_in, k...); conv_transpose3d wants (C_in, C_out, k...)
        dense_up = F.conv_transpose3d(coarse_grid, w_up.transpose(0, 1), stride=2)
        xyz = (coords[:, 1:] - low).long()
        expected_up = dense_up[coords[:, 0].long(), :, xyz[:, 0], xyz[:, 1], xyz[:, 2]]
        torch.testing.assert_close(up, expected_up, atol=1e-12, rtol=1e-12)
    # The transpose is the adjoint of the downsampling: <down(x), y> = <x, up(y)> with W^T.
    up_adjoint = ops.sparse_conv(coarse_features, weight.transpose(1, 2), reverse, neighbors)
    torch.testing.assert_close((down * coarse_features).sum(), (features * up_adjoint).sum(), rtol=1e-12, atol=1e-10)

    upstream = torch.randn_like(down)
    grads = torch.autograd.grad(down, (features, weight), upstream)
    dense_grads = torch.autograd.grad(expected, (features, weight), upstream)
    for got, want in zip(grads, dense_grads):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_backward_matches_reference(compiled, device, dtype):
    _, _, neighbors, reverse, features, weight = conv_problem(700, (24, 40), dtype=dtype, device=device)
    upstream = torch.randn(neighbors.shape[0], 40, dtype=dtype, device=device)
    leaves = [features.clone().requires_grad_(), weight.clone().requires_grad_()]
    grads = torch.autograd.grad(ops.sparse_conv(*leaves, neighbors, reverse), leaves, upstream)
    ref_leaves = [features.clone().requires_grad_(), weight.clone().requires_grad_()]
    expected = torch.autograd.grad(reference.sparse_conv(*ref_leaves, neighbors), ref_leaves, upstream)
    tolerance = 1e-11 if dtype == torch.float64 else 1e-4
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    _, _, neighbors, reverse, features, weight = conv_problem(60, (3, 4), low=-3, high=3, device=device)
    features.requires_grad_()
    weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda f, w: ops.sparse_conv(f, w, neighbors, reverse), (features, weight))
    assert torch.autograd.gradgradcheck(lambda f, w: ops.sparse_conv(f, w, neighbors, reverse), (features, weight))

    index = torch.tensor([0, 2, 2, -1, 0, 1, 2], device=device)
    points = torch.randn(7, 3, dtype=torch.float64, device=device, requires_grad=True)
    for reduction in ("mean", "first"):
        assert torch.autograd.gradcheck(lambda p: ops.voxel_pool(p, index, 4, reduction), (points,))
        assert torch.autograd.gradgradcheck(lambda p: ops.voxel_pool(p, index, 4, reduction), (points,))

    voxels = torch.randn(5, 3, dtype=torch.float64, device=device, requires_grad=True)
    indices = torch.tensor([[0, 1, -1], [4, 4, 2], [-1, -1, -1], [3, 0, 1]], dtype=torch.int32, device=device)
    weights = torch.rand(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: ops.devoxelize(v, indices, w), (voxels, weights))
    assert torch.autograd.gradgradcheck(lambda v, w: ops.devoxelize(v, indices, w), (voxels, weights))


def test_reference_gradcheck():
    _, _, neighbors, reverse, features, weight = conv_problem(40, (2, 3), low=-3, high=3)
    features.requires_grad_()
    weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda f, w: reference.sparse_conv(f, w, neighbors), (features, weight))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(compiled, device):
    coords, offsets, neighbors, reverse, features, weight = conv_problem(200, (6, 5), device=device)
    for dtype in DTYPES:
        f, w = features.to(dtype), weight.to(dtype)
        for requires_grad in (False, True):
            args = (f.clone().requires_grad_(requires_grad), w.clone().requires_grad_(requires_grad), neighbors, reverse)
            torch.library.opcheck(torch.ops.meshrec.sparse_conv.default, args)
        grad = torch.randn(neighbors.shape[0], 5, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.meshrec.sparse_conv_weight_grad.default, (f, grad, neighbors, reverse))
    torch.library.opcheck(torch.ops.meshrec.sparse_kernel_map.default, (coords, coords, offsets, 0))
    torch.library.opcheck(torch.ops.meshrec.sparse_invert_map.default, (neighbors, coords.shape[0]))
    torch.library.opcheck(torch.ops.meshrec.sparse_unique_coords.default, (coords, [2, 2, 2], False, 0))
    index = torch.tensor([0, 2, 2, -1, 0, 1], device=device)
    for reduction in ("mean", "first"):
        points = torch.randn(6, 3, device=device, dtype=torch.float64, requires_grad=True)
        torch.library.opcheck(torch.ops.meshrec.sparse_voxel_pool.default, (points, index, 4, reduction))
        torch.library.opcheck(torch.ops.meshrec.sparse_voxel_pool_backward.default,
                              (torch.randn(4, 3, device=device), index, reduction))
    indices = torch.tensor([[0, 1, -1], [3, 3, 2]], dtype=torch.int32, device=device)
    voxels = torch.randn(4, 2, device=device, requires_grad=True)
    weights = torch.rand(2, 3, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.meshrec.sparse_devoxelize.default, (voxels, indices, weights))
    torch.library.opcheck(torch.ops.meshrec.sparse_devoxelize_backward.default,
                          (torch.randn(2, 2, device=device), indices, weights, 4))


def test_torch_compile_traces_data_dependent_sizes(compiled):
    """Voxelisation has a data-dependent size: the fake kernel returns an unbacked size, so the
    whole voxelise -> map -> conv -> devoxelise chain compiles as one graph."""

    def encode(coords, features, weight):
        unique, inverse = torch.ops.meshrec.sparse_unique_coords(coords, [1, 1, 1], False, 0)
        voxels = torch.ops.meshrec.sparse_voxel_pool(features, inverse, unique.shape[0], "mean")
        offsets = ops.kernel_offsets(3)
        neighbors = torch.ops.meshrec.sparse_kernel_map(unique, unique, offsets, 0)
        reverse = torch.ops.meshrec.sparse_invert_map(neighbors, unique.shape[0])
        out = torch.ops.meshrec.sparse_conv(voxels, weight, neighbors, reverse)
        taps = torch.ops.meshrec.sparse_kernel_map(unique, coords, offsets[13:14], 0)
        return torch.ops.meshrec.sparse_devoxelize(out, taps, torch.ones(taps.shape, dtype=out.dtype))

    coords = random_voxel_coords(300, -5, 5, 2, seed=9)
    coords = torch.cat([coords, coords[:50]])
    features = torch.randn(coords.shape[0], 4)
    weight = torch.randn(27, 4, 6, requires_grad=True)
    expected = encode(coords, features, weight)
    compiled_encode = torch.compile(encode, fullgraph=True, backend="aot_eager")
    out = compiled_encode(coords, features, weight)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), weight)
    (expected_grad,) = torch.autograd.grad(expected.sum(), weight)
    torch.testing.assert_close(grad, expected_grad)


# ---- pooling and devoxelisation ----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "first"])
def test_voxel_pool_matches_reference(compiled, device, dtype, reduction):
    generator = torch.Generator().manual_seed(10)
    index = torch.randint(-1, 40, (1000,), generator=generator).to(device)
    features = torch.randn(1000, 9, generator=generator, dtype=dtype).to(device)
    out = ops.voxel_pool(features, index, 45, reduction)
    torch.testing.assert_close(out, reference.voxel_pool(features, index, 45, reduction))
    assert torch.equal(out[40:], torch.zeros_like(out[40:]))  # voxels without points


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_devoxelize_matches_reference(compiled, device, dtype):
    generator = torch.Generator().manual_seed(11)
    indices = torch.randint(-1, 50, (800, 8), generator=generator, dtype=torch.int32).to(device)
    weights = torch.rand(800, 8, generator=generator, dtype=dtype).to(device)
    voxels = torch.randn(50, 13, generator=generator, dtype=dtype).to(device)
    torch.testing.assert_close(ops.devoxelize(voxels, indices, weights), reference.devoxelize(voxels, indices, weights))
    upstream = torch.randn(800, 13, dtype=dtype, device=device)
    leaves = [voxels.clone().requires_grad_(), weights.clone().requires_grad_()]
    grads = torch.autograd.grad(ops.devoxelize(leaves[0], indices, leaves[1]), leaves, upstream)
    ref = [voxels.clone().requires_grad_(), weights.clone().requires_grad_()]
    expected = torch.autograd.grad(reference.devoxelize(ref[0], indices, ref[1]), ref, upstream)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


# ---- determinism -----------------------------------------------------------------------------------


def test_cpu_results_are_bitwise_identical_across_runs_and_threads(compiled):
    _, _, neighbors, reverse, features, weight = conv_problem(3000, (32, 48), low=-12, high=12, dtype=torch.float32)
    features.requires_grad_()
    weight.requires_grad_()
    upstream = torch.randn(neighbors.shape[0], 48)

    def run():
        out = ops.sparse_conv(features, weight, neighbors, reverse)
        return (out, *torch.autograd.grad(out, (features, weight), upstream))

    first = run()
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            for again in (run(), run()):
                for a, b in zip(first, again):
                    assert torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)
    points = torch.randn(5000, 3) * 20
    index = torch.randint(0, 300, (5000,))
    pooled = ops.voxel_pool(points, index, 300)
    assert all(torch.equal(pooled, ops.voxel_pool(points, index, 300)) for _ in range(3))


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_cpu_kernel_path_agrees_with_reference(compiled, isa):
    """The instruction set is chosen once per process, so each path runs in a subprocess
    (MESHREC_CPU_ISA caps it at what this CPU has)."""
    script = (
        "import torch\n"
        "from meshrec import ops\n"
        "from meshrec.ops import reference\n"
        "from meshrec.testing import random_voxel_coords\n"
        "coords = random_voxel_coords(900, -7, 7, 2, seed=3)\n"
        "nb = ops.kernel_map(coords, coords, ops.kernel_offsets(3)); rev = ops.invert_kernel_map(nb, len(coords))\n"
        "for dtype, tol in ((torch.float64, 1e-11), (torch.float32, 1e-4)):\n"
        "    for cin, cout in ((3, 5), (16, 16), (33, 96), (64, 130)):\n"
        "        f = torch.randn(len(coords), cin, dtype=dtype); w = torch.randn(27, cin, cout, dtype=dtype)\n"
        "        g = torch.randn(len(coords), cout, dtype=dtype)\n"
        "        torch.testing.assert_close(ops.sparse_conv(f, w, nb, rev), reference.sparse_conv(f, w, nb), atol=tol * cin, rtol=tol)\n"
        "        torch.testing.assert_close(torch.ops.meshrec.sparse_conv_weight_grad(f, g, nb, rev),\n"
        "                                   reference.sparse_conv_weight_grad(f, g, nb), atol=tol * 100, rtol=tol)\n"
        "print(torch.ops.meshrec._sparse_cpu_kernels())\n"
    )
    env = {**os.environ, "MESHREC_CPU_ISA": isa}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"generic", "avx2", "avx512"}
    if isa == "generic":
        assert result.stdout.strip() == "generic"


# ---- bad input ------------------------------------------------------------------------------------------


def test_bad_coordinates_raise_clear_errors():
    good = random_voxel_coords(10, seed=12)
    with pytest.raises(TypeError, match="int32 voxel coordinates"):
        ops.unique_coords(good.float())
    with pytest.raises(TypeError, match="int32"):
        ops.unique_coords(good.long())
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        ops.unique_coords(good[:, :3])
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        ops.kernel_map(good, torch.zeros(3, 5, dtype=torch.int32), ops.kernel_offsets(3))
    with pytest.raises(TypeError, match=r"offsets must be int32 of shape \(K, 3\)"):
        ops.kernel_map(good, good, ops.kernel_offsets(3).float())
    with pytest.raises(ValueError, match="rounding"):
        ops.unique_coords(good, 2, rounding="round")
    with pytest.raises(ValueError, match="stride"):
        ops.unique_coords(good, 0)
    far = good.clone()
    far[3, 2] = 70000
    with pytest.raises((ValueError, RuntimeError), match="out of range"):
        ops.unique_coords(far)
    with pytest.raises((ValueError, RuntimeError), match="out of range"):
        ops.kernel_map(far, good, ops.kernel_offsets(3))
    big_batch = good.clone()
    big_batch[0, 0] = 5000
    with pytest.raises((ValueError, RuntimeError), match="batch indices"):
        ops.unique_coords(big_batch)
    duplicated = torch.cat([good, good[:1]])
    with pytest.raises((ValueError, RuntimeError), match="unique"):
        ops.kernel_map(duplicated, good, ops.kernel_offsets(3))


def test_hash_capacity_errors():
    coords = random_voxel_coords(100, seed=13)
    for bad in (0, -1, 2**31):
        with pytest.raises(ValueError, match="hash_capacity"):
            ops.unique_coords(coords, hash_capacity=bad)
    with pytest.raises(TypeError, match="hash_capacity"):
        ops.kernel_map(coords, coords, ops.kernel_offsets(3), hash_capacity=1.5)
    with pytest.raises(ValueError, match="hash_capacity 64 cannot hold the 100 rows"):
        ops.kernel_map(coords, coords, ops.kernel_offsets(3), hash_capacity=64)
    unique, _ = ops.unique_coords(coords, hash_capacity=100)  # 128 slots for 100 unique voxels: fits
    assert unique.shape[0] == 100
    with pytest.raises((ValueError, RuntimeError), match="hash_capacity"):
        ops.unique_coords(coords, hash_capacity=50)  # 64 slots: filled up
    assert torch.equal(ops.kernel_map(coords, coords, ops.kernel_offsets(3), hash_capacity=101),
                       ops.kernel_map(coords, coords, ops.kernel_offsets(3)))


def test_compiled_kernels_check_their_arguments(compiled):
    coords = random_voxel_coords(20, seed=14)
    neighbors = torch.ops.meshrec.sparse_kernel_map(coords, coords, ops.kernel_offsets(3), 0)
    reverse = torch.ops.meshrec.sparse_invert_map(neighbors, 20)
    with pytest.raises(RuntimeError, match="hash_capacity"):
        torch.ops.meshrec.sparse_kernel_map(coords, coords, ops.kernel_offsets(3), 16)
    with pytest.raises(RuntimeError, match="hash_capacity"):
        torch.ops.meshrec.sparse_unique_coords(coords, [1, 1, 1], False, -5)
    with pytest.raises(RuntimeError, match="filled up"):
        torch.ops.meshrec.sparse_unique_coords(coords, [1, 1, 1], False, 8)
    with pytest.raises(RuntimeError, match="int32 voxel coordinates"):
        torch.ops.meshrec.sparse_unique_coords(coords.float(), [1, 1, 1], False, 0)
    with pytest.raises(RuntimeError, match=r"weight must have shape \(K, C_in, C_out\)"):
        torch.ops.meshrec.sparse_conv(torch.randn(20, 3), torch.randn(27, 4, 5), neighbors, reverse)
    with pytest.raises(RuntimeError, match="one column per kernel offset"):
        torch.ops.meshrec.sparse_conv(torch.randn(20, 3), torch.randn(8, 3, 5), neighbors, reverse)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.meshrec.sparse_conv(torch.randn(20, 3), torch.randn(27, 3, 5, dtype=torch.float64), neighbors, reverse)
    bad = neighbors.clone()
    bad[0, 0] = 99
    with pytest.raises(RuntimeError, match="holds row 99"):
        torch.ops.meshrec.sparse_conv(torch.randn(20, 3), torch.randn(27, 3, 5), bad, reverse)
    with pytest.raises(RuntimeError, match="point_to_voxel"):
        torch.ops.meshrec.sparse_voxel_pool(torch.randn(4, 2), torch.tensor([0, 1, 5, 0]), 3, "mean")
    with pytest.raises(RuntimeError, match="reduction"):
        torch.ops.meshrec.sparse_voxel_pool(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), 3, "max")


def test_bad_conv_inputs():
    _, _, neighbors, reverse, features, weight = conv_problem(50, (3, 4), low=-3, high=3)
    with pytest.raises(ValueError, match=r"weight must have shape \(K, C_in, C_out\)"):
        ops.sparse_conv(features, weight[:, :2], neighbors, reverse)
    with pytest.raises(TypeError, match="same dtype"):
        ops.sparse_conv(features.float(), weight, neighbors, reverse)
    with pytest.raises(TypeError, match="int32"):
        ops.sparse_conv(features, weight, neighbors.long(), reverse)
    with pytest.raises(ValueError, match="reverse_neighbors must have shape"):
        ops.sparse_conv(features, weight, neighbors, reverse[:-1])
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.sparse_conv(features.int(), weight, neighbors, reverse)
    with pytest.raises(ValueError, match="point_to_voxel"):
        ops.voxel_pool(features, torch.zeros(3, dtype=torch.long), 2)


# ---- properties ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    points=st.lists(st.tuples(st.integers(0, 3), *[st.integers(-40, 40)] * 3), min_size=0, max_size=60),
    stride=st.sampled_from([1, 2, 3, 4]),
    rounding=st.sampled_from(["floor", "trunc"]),
)
def test_property_unique_and_maps_match_reference(points, stride, rounding):
    coords = torch.tensor(points, dtype=torch.int32).reshape(-1, 4)
    unique, inverse = ops.unique_coords(coords, stride, rounding=rounding)
    expected, expected_inverse = reference.unique_coords(coords, (stride,) * 3, rounding == "trunc")
    assert torch.equal(unique, expected) and torch.equal(inverse, expected_inverse)
    fine = sorted_unique(coords) if coords.numel() else coords
    offsets = ops.kernel_offsets(3, 1)
    assert torch.equal(ops.kernel_map(fine, unique, offsets), reference.kernel_map(fine, unique, offsets))
    assert torch.equal(ops.kernel_map(fine, fine, offsets), reference.kernel_map(fine, fine, offsets))


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(0, 80),
    channels=st.tuples(st.integers(0, 20), st.integers(0, 20)),
    kernel_size=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 1000),
)
def test_property_conv_matches_reference(count, channels, kernel_size, seed):
    coords = random_voxel_coords(count, -4, 4, 2, seed=seed)
    offsets = ops.kernel_offsets(kernel_size)
    neighbors = ops.kernel_map(coords, coords, offsets)
    reverse = ops.invert_kernel_map(neighbors, coords.shape[0])
    features = torch.randn(coords.shape[0], channels[0], dtype=torch.float64)
    weight = torch.randn(offsets.shape[0], *channels, dtype=torch.float64)
    out = ops.sparse_conv(features, weight, neighbors, reverse)
    assert out.shape == (coords.shape[0], channels[1])
    torch.testing.assert_close(out, reference.sparse_conv(features, weight, neighbors), atol=1e-12, rtol=1e-12)


def test_reference_fallback_agrees():
    script = (
        "import torch, meshrec\n"
        "from meshrec import ops\n"
        "from meshrec.scene import SPVCNN\n"
        "from meshrec.testing import random_voxel_coords\n"
        "assert meshrec.extension.active_backend() == 'reference'\n"
        "coords = random_voxel_coords(200, -5, 5, 2, seed=1)\n"
        "u, inv = ops.unique_coords(torch.cat([coords, coords[:9]]), 2)\n"
        "net = SPVCNN(4, 3, channel_ratio=0.25).eval()\n"
        "out = net(coords[:, 1:].float(), torch.randn(200, 4), coords[:, 0])\n"
        "assert out.point_features.shape == (200, 3) and torch.isfinite(out.point_features).all()\n"
    )
    env = {**os.environ, "MESHREC_DISABLE_COMPILED_OPS": "1"}
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- voxel size and point dtype are refused with messages about them (issue 13) -----------------

@pytest.mark.parametrize("size", [float("inf"), 1e-300, float("nan"), 0.0, -0.1])
def test_voxelize_refuses_bad_voxel_sizes_naming_the_voxel_size(size):
    """inf used to pass (every point in voxel 0) and 1e-300 was reported as "points must be
    finite"; both are about the voxel size."""
    from meshrec.scene import voxelize

    points = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(points, voxel_size=size)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_voxelize_names_the_points_for_half_precision(dtype):
    from meshrec.scene import voxelize

    with pytest.raises(TypeError, match=r"points must be float32 or float64, got torch\.(b?float16)"):
        voxelize(torch.rand(10, 3).to(dtype), voxel_size=0.1)


def test_voxelize_still_takes_tensor_and_integer_voxel_sizes():
    from meshrec.scene import voxelize

    points = torch.rand(40, 3) * 4
    expected = voxelize(points, voxel_size=1.0)
    for size in (1, torch.tensor(1.0)):
        result = voxelize(points, voxel_size=size)
        assert torch.equal(result.tensor.coords, expected.tensor.coords)
