"""Single-thread cost per item of meshrec's CPU kernels, and where a second thread starts to pay.

The grain sizes of the CPU kernels (csrc/common/parallel.h) come from these numbers: each kernel
states its cost per item, and a parallel region is opened only when every thread gets at least
kMinTaskNanoseconds of work. Run ``python benchmarks/grain_costs.py`` on a quiet machine; the
figures are recorded in benchmarks/RESULTS.md ("Grain sizes"). Minimum of many runs (the cost
of the work itself, not of interference).
"""

from __future__ import annotations

import time

import torch

import meshrec.extension
from meshrec.body.mannequin import mannequin_smpl
from meshrec.ops import procrustes, sample_sdf, smpl_lbs, winding_number, nearest_points
from meshrec.rotations import rodrigues


def best(fn, repeats: int = 30) -> float:
    """Minimum wall time of ``fn()`` in nanoseconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return float(min(times))


def per_item(label: str, fn, items: int, repeats: int = 30) -> None:
    print(f"{label:<52} {best(fn, repeats) / items:10.1f} ns per item ({items} items)")


def main() -> None:
    assert meshrec.extension.has_compiled_ops(), "build meshrec._C first"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, float32 unless noted\n")

    axis_angle = torch.rand(100_000, 3) - 0.5
    per_item("rodrigues, forward (per rotation)", lambda: rodrigues(axis_angle), 100_000)
    leaf = axis_angle.clone().requires_grad_()
    grad = torch.randn(100_000, 3, 3)
    per_item("rodrigues, forward + backward (per rotation)",
             lambda: torch.autograd.grad(rodrigues(leaf), leaf, grad), 100_000)

    for count in (14, 6890):
        source, target = torch.randn(2, 2000 if count == 14 else 20, count, 3, dtype=torch.float64)
        batch = source.shape[0]
        per_item(f"procrustes, {count} points (per sample)", lambda: procrustes(source, target), batch, 10)

    grid = torch.randn(64, 64, 64)
    points = torch.rand(200_000, 3) * 2 - 1
    per_item("sample_sdf (per point)", lambda: sample_sdf(points, grid, (-1.0,) * 3, (1.0,) * 3), 200_000)

    body = mannequin_smpl(create_transl=False)
    with torch.no_grad():
        vertices = body().vertices
    faces = torch.as_tensor(body.faces)
    queries = torch.rand(1, 100_000, 3) * 2 - 1
    per_item("winding_number, grid build + queries (per body)", lambda: winding_number(queries[:, :1], vertices, faces),
             1, 10)
    per_item("winding_number (per query)", lambda: winding_number(queries, vertices, faces), 100_000, 5)
    scene = torch.rand(1, 1_000_000, 3)
    per_item("nearest_points, grid of 1M points + 1 query (per scene)", lambda: nearest_points(vertices[:, :1], scene),
             1, 5)
    per_item("nearest_points (per query, 6890 queries)", lambda: nearest_points(vertices, scene), 6890, 5)

    print("\nSMPL forward, one body, by vertices computed (joints always), in microseconds:")
    print("  1 thread; 2 threads always parallel (MESHREC_MIN_TASK_NS=0); 2 threads with meshrec's grain sizes")
    for count in (30, 300, 1000, 3000, 6890):
        timings = [_smpl_forward(count, threads, minimum) for threads, minimum in ((1, None), (2, "0"), (2, None))]
        print(f"  {count:5d} vertices: " + " / ".join(f"{t:8.1f}" for t in timings))


def _smpl_forward(count: int, threads: int, minimum: str | None) -> float:
    """Best time (us) of a one-body forward computing ``count`` vertices, in a fresh process (the
    grain threshold is read once per process)."""
    import os
    import subprocess
    import sys

    code = f"""
import time, torch
from meshrec.body.mannequin import mannequin_smpl
from meshrec.ops import smpl_lbs
torch.set_num_threads({threads})
arrays = mannequin_smpl(create_transl=False)._kernel_inputs()[0].select_vertices(torch.linspace(0, 6889, {count}).long())
betas, rotations = torch.zeros(1, 10), torch.eye(3).expand(1, 24, 3, 3).contiguous()
best = float("inf")
for _ in range(300):
    start = time.perf_counter_ns(); smpl_lbs(betas, rotations, arrays); best = min(best, time.perf_counter_ns() - start)
print(best / 1e3)
"""
    env = dict(os.environ)
    env.pop("MESHREC_MIN_TASK_NS", None)
    if minimum is not None:
        env["MESHREC_MIN_TASK_NS"] = minimum
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip())

if __name__ == "__main__":
    main()
