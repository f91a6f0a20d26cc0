"""ctest: the CMake-built ops library loads into torch and agrees with the pure-PyTorch reference.

Usage: python check_ops_library.py path/to/libmeshrec_ops.so
"""

import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

torch.ops.load_library(sys.argv[1])


def load_reference(family: str):
    """A reference module loaded by path, so that the meshrec package (and its own _C) stays unimported."""
    path = Path(__file__).resolve().parents[2] / "meshrec" / "ops" / "reference" / f"{family}.py"
    spec = importlib.util.spec_from_file_location(f"meshrec_reference_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference("rotation")
metrics_reference = load_reference("metrics")
sparse_reference = load_reference("sparse")

print(json.loads(torch.ops.meshrec._build_info()))
for dtype, tolerance in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
    axis_angle = torch.randn(1000, 3, dtype=dtype)
    torch.testing.assert_close(torch.ops.meshrec.rodrigues(axis_angle), reference.rodrigues(axis_angle),
                               atol=tolerance, rtol=0)
    grad = torch.randn(1000, 3, 3, dtype=dtype)
    leaf = axis_angle.clone().requires_grad_()
    (expected,) = torch.autograd.grad(reference.rodrigues(leaf), leaf, grad)
    torch.testing.assert_close(torch.ops.meshrec.rodrigues_backward(grad, axis_angle), expected,
                               atol=tolerance * 10, rtol=0)
    source, target = torch.randn(500, 14, 3, dtype=dtype), torch.randn(500, 14, 3, dtype=dtype)
    for got, expected in zip(torch.ops.meshrec.procrustes(source, target, None, True),
                             metrics_reference.procrustes(source, target, None, True)):
        torch.testing.assert_close(got, expected, atol=tolerance * 100, rtol=0)
    points, sdf = torch.rand(1000, 3, dtype=dtype) * 1.4 - 0.2, torch.randn(5, 6, 7, dtype=dtype)
    torch.testing.assert_close(torch.ops.meshrec.sample_sdf(points, sdf, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
                               metrics_reference.sample_sdf(points, sdf, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
                               atol=tolerance * 10, rtol=0)
    queries, cloud = torch.randn(1, 200, 3, dtype=dtype), torch.randn(1, 3000, 3, dtype=dtype)
    distance, index = torch.ops.meshrec.nearest_points(queries, cloud)
    expected_distance, expected_index = metrics_reference.nearest_points(queries, cloud)
    torch.testing.assert_close(distance, expected_distance, atol=tolerance * 10, rtol=0)

# SMPL ops on a tiny random model (5 joints, 100 vertices), against the pure-PyTorch reference.
smpl_reference = load_reference("smpl")
generator = torch.Generator().manual_seed(0)
parents, vertices_count, betas_count = (-1, 0, 1, 0, 3), 100, 4
shapedirs = torch.randn(betas_count, 3 * vertices_count, generator=generator, dtype=torch.float64) * 0.1
posedirs = torch.randn(36, 3 * vertices_count, generator=generator, dtype=torch.float64) * 0.01
blend = torch.cat([shapedirs, posedirs])
panels = -(-blend.shape[1] // 192)
padded = torch.zeros(blend.shape[0], panels * 192, dtype=torch.float64)
padded[:, : blend.shape[1]] = blend
weights = torch.rand(vertices_count, 2, generator=generator, dtype=torch.float64)
arrays = types.SimpleNamespace(
    v_template=torch.randn(vertices_count, 3, generator=generator, dtype=torch.float64), shapedirs=shapedirs,
    posedirs=posedirs, blend_panels=padded.view(blend.shape[0], panels, 192).transpose(0, 1).contiguous(),
    joint_template=torch.randn(5, 3, generator=generator, dtype=torch.float64),
    joint_shapedirs=torch.randn(betas_count, 15, generator=generator, dtype=torch.float64),
    skin_joints=torch.randint(0, 5, (vertices_count, 2), generator=generator, dtype=torch.int32),
    skin_weights=weights / weights.sum(1, keepdim=True), parents=parents)
regressor = types.SimpleNamespace(vertex_ids=torch.tensor([2, 50], dtype=torch.int32),
                                  rows=torch.tensor([1, 0], dtype=torch.int32),
                                  weights=torch.tensor([1.0, 0.5], dtype=torch.float64), num_rows=2)
betas = torch.randn(3, betas_count, dtype=torch.float64)
axis_angle = torch.randn(3, 5, 3, dtype=torch.float64)
rotations = torch.ops.meshrec.rodrigues(axis_angle)
transl = torch.randn(3, 3, dtype=torch.float64)
vertices, joints, _ = torch.ops.meshrec.smpl_lbs(
    betas, rotations, transl, arrays.v_template[None], arrays.joint_template[None], arrays.shapedirs, arrays.posedirs,
    arrays.blend_panels, arrays.joint_shapedirs, list(parents), arrays.skin_joints, arrays.skin_weights,
    regressor.vertex_ids, regressor.rows, regressor.weights, 2, False)
expected_vertices, expected_joints = smpl_reference.smpl_lbs(betas, rotations, arrays, transl, regressor=regressor)
torch.testing.assert_close(vertices, expected_vertices, atol=1e-12, rtol=0)
torch.testing.assert_close(joints, expected_joints, atol=1e-12, rtol=0)
generator = torch.Generator().manual_seed(0)
batch = torch.randint(0, 2, (600, 1), generator=generator)
coords = torch.unique(torch.cat([batch, torch.randint(-6, 6, (600, 3), generator=generator)], 1), dim=0).int()
offsets = torch.tensor([[x, y, z] for z in (-1, 0, 1) for y in (-1, 0, 1) for x in (-1, 0, 1)], dtype=torch.int32)
neighbors = torch.ops.meshrec.sparse_kernel_map(coords, coords, offsets, 0)
assert torch.equal(neighbors, sparse_reference.kernel_map(coords, coords, offsets))
reverse = torch.ops.meshrec.sparse_invert_map(neighbors, coords.shape[0])
features = torch.randn(coords.shape[0], 7, dtype=torch.float64)
weight = torch.randn(27, 7, 5, dtype=torch.float64)
torch.testing.assert_close(torch.ops.meshrec.sparse_conv(features, weight, neighbors, reverse),
                           sparse_reference.sparse_conv(features, weight, neighbors), atol=1e-12, rtol=1e-12)
print("sparse CPU kernels:", torch.ops.meshrec._sparse_cpu_kernels())
print("ops library agrees with the reference")
