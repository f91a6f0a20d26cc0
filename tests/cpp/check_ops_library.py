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
reference_file = Path(__file__).resolve().parents[2] / "meshrec" / "ops" / "reference" / "rotation.py"
spec = importlib.util.spec_from_file_location("meshrec_reference", reference_file)
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)

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
print("ops library agrees with the reference")
