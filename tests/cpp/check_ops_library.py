"""ctest: the CMake-built ops library loads into torch and agrees with the pure-PyTorch reference.

Usage: python check_ops_library.py path/to/libmeshrec_ops.so
"""

import importlib.util
import json
import sys
from pathlib import Path

import torch

torch.ops.load_library(sys.argv[1])
# The reference is loaded by path so that the meshrec package (and its own _C) stays unimported.
def load_reference(family):
    path = Path(__file__).resolve().parents[2] / "meshrec" / "ops" / "reference" / f"{family}.py"
    spec = importlib.util.spec_from_file_location(f"meshrec_reference_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference("rotation")
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
