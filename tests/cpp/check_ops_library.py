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

def load_reference(family: str):
    path = Path(__file__).resolve().parents[2] / "meshrec" / "ops" / "reference" / f"{family}.py"
    spec = importlib.util.spec_from_file_location(f"meshrec_reference_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference("rotation")
metrics_reference = load_reference("metrics")

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
print("ops library agrees with the reference")
