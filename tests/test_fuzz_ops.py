"""A short hypothesis fuzz of every compiled op's argument checking: no input crashes the process.

Each example starts from a valid argument list for one op (tiny sizes) and breaks one or two
arguments: another shape or rank, another dtype, empty, non-contiguous, NaN / infinite / huge
values, out-of-range or negative indices, absurd integer arguments. The op may return or raise
any Python exception; what must never happen is a crash (a segfault, an abort, a sanitiser trap)
or a hang. The fuzz runs in a subprocess, which prints every example before running it, so a
crash fails the test with the op and arguments that killed it instead of killing pytest.

Run one family by hand: ``python tests/test_fuzz_ops.py smpl 200``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAMILIES = ("rotation", "metrics", "smpl", "sparse")
EXAMPLES = 60  # per op; the whole fuzz takes well under a minute on two cores
# Integer arguments: small and absurd, never "large but allocatable" (a num_voxels of 2^28 with 4
# channels would legitimately allocate 4 GB: a resource limit, not a memory-safety question).
ABSURD_INTS = (-(2**62), -(2**31), -7, -1, 0, 1, 2, 3, 2**31 - 1, 2**40, 2**62)


# ---- the worker (runs in a subprocess) --------------------------------------------------------------

def _valid_arguments() -> dict:
    """op name -> (callable, valid argument list); tiny sizes, float64, CPU."""
    import numpy as np
    import torch

    from meshrec.extension import has_compiled_ops
    from meshrec.ops import prepare_smpl_arrays, sparse as sparse_ops

    if not has_compiled_ops():  # loads meshrec._C
        raise SystemExit("meshrec._C is not available")
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    ops = torch.ops.meshrec
    table = {
        "rodrigues": (ops.rodrigues, [randn(4, 3)]),
        "rodrigues_backward": (ops.rodrigues_backward, [randn(4, 3, 3), randn(4, 3)]),
        "procrustes": (ops.procrustes, [randn(2, 5, 3), randn(2, 5, 3), torch.rand(2, 5, dtype=torch.float64), True]),
        "procrustes_backward": (ops.procrustes_backward, [randn(2, 5, 3), randn(2), randn(2, 3, 3), randn(2, 3),
                                                          randn(2, 5), randn(2, 5, 3), randn(2, 5, 3),
                                                          torch.rand(2, 5, dtype=torch.float64), True]),
        "sample_sdf": (ops.sample_sdf, [randn(6, 3), randn(4, 5, 3), [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
        "sample_sdf_backward": (ops.sample_sdf_backward, [randn(6), randn(6, 3), randn(4, 5, 3), [-1.0, -1.0, -1.0],
                                                          [1.0, 1.0, 1.0]]),
        "nearest_points": (ops.nearest_points, [randn(1, 7, 3), randn(1, 9, 3)]),
    }
    # A closed tetrahedron.
    tetra = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)[None]
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=torch.int64)
    table["winding_number"] = (ops.winding_number, [randn(1, 6, 3) * 0.3, tetra, faces])

    # A tiny body model: 10 vertices, 3 joints, 2 shape components.
    rng = np.random.default_rng(0)
    weights = rng.random((10, 3))
    weights /= weights.sum(1, keepdims=True)
    arrays = prepare_smpl_arrays(rng.normal(size=(10, 3)), rng.normal(size=(10, 3, 2)), rng.normal(size=(18, 30)),
                                 rng.random((3, 10)), [-1, 0, 1], weights, dtype=torch.float64)
    ids = torch.tensor([1, 4, 4, 9], dtype=torch.int32)
    rows = torch.tensor([0, 1, 0, 1], dtype=torch.int32)
    reg_weights = torch.tensor([0.5, 0.25, 0.5, 0.75], dtype=torch.float64)
    betas, rotations = randn(2, 2), torch.linalg.qr(randn(2, 3, 3, 3))[0]
    table["smpl_lbs"] = (ops.smpl_lbs, [
        betas, rotations, randn(2, 3), arrays.v_template[None], arrays.joint_template[None], arrays.shapedirs,
        arrays.posedirs, arrays.blend_panels, arrays.joint_shapedirs, list(arrays.parents), arrays.skin_joints,
        arrays.skin_weights, ids, rows, reg_weights, 2, True])
    table["smpl_lbs_backward"] = (ops.smpl_lbs_backward, [
        randn(2, 10, 3), randn(2, 5, 3), betas, rotations, arrays.joint_template[None], arrays.shapedirs,
        arrays.posedirs, arrays.joint_shapedirs, list(arrays.parents), arrays.skin_joints, arrays.skin_weights, ids,
        rows, reg_weights, randn(2, 10, 3)])
    table["joint_regression"] = (ops.joint_regression, [randn(2, 10, 3), ids, rows, reg_weights, 2])
    table["joint_regression_backward"] = (ops.joint_regression_backward, [randn(2, 2, 3), ids, rows, reg_weights, 10])

    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 2], [0, 0, 0, 0]], dtype=torch.int32)
    unique, point_to_voxel = sparse_ops.unique_coords(coords)
    offsets = sparse_ops.kernel_offsets(3)
    neighbors = sparse_ops.kernel_map(unique, unique, offsets)
    reverse = sparse_ops.invert_kernel_map(neighbors, unique.shape[0])
    features, weight = randn(unique.shape[0], 2), randn(offsets.shape[0], 2, 3)
    table.update({
        "sparse_unique_coords": (ops.sparse_unique_coords, [coords, [1, 1, 1], False, 0]),
        "sparse_kernel_map": (ops.sparse_kernel_map, [unique, unique, offsets, 0]),
        "sparse_invert_map": (ops.sparse_invert_map, [neighbors, unique.shape[0]]),
        "sparse_conv": (ops.sparse_conv, [features, weight, neighbors, reverse]),
        "sparse_conv_weight_grad": (ops.sparse_conv_weight_grad, [features, randn(unique.shape[0], 3), neighbors,
                                                                  reverse]),
        "sparse_voxel_pool": (ops.sparse_voxel_pool, [randn(5, 2), point_to_voxel, unique.shape[0], "mean"]),
        "sparse_voxel_pool_backward": (ops.sparse_voxel_pool_backward, [randn(unique.shape[0], 2), point_to_voxel,
                                                                        "first"]),
        "sparse_devoxelize": (ops.sparse_devoxelize, [features, point_to_voxel[:, None].int().repeat(1, 2),
                                                      torch.rand(5, 2, dtype=torch.float64)]),
        "sparse_devoxelize_backward": (ops.sparse_devoxelize_backward, [randn(5, 2),
                                                                        point_to_voxel[:, None].int().repeat(1, 2),
                                                                        torch.rand(5, 2, dtype=torch.float64),
                                                                        unique.shape[0]]),
    })
    return table


FAMILY_OPS = {
    "rotation": ("rodrigues", "rodrigues_backward"),
    "metrics": ("procrustes", "procrustes_backward", "sample_sdf", "sample_sdf_backward", "winding_number",
                "nearest_points"),
    "smpl": ("smpl_lbs", "smpl_lbs_backward", "joint_regression", "joint_regression_backward"),
    "sparse": ("sparse_unique_coords", "sparse_kernel_map", "sparse_invert_map", "sparse_conv",
               "sparse_conv_weight_grad", "sparse_voxel_pool", "sparse_voxel_pool_backward", "sparse_devoxelize",
               "sparse_devoxelize_backward"),
}


def _mutations():
    """A hypothesis strategy of functions that break one argument."""
    import torch
    from hypothesis import strategies as st

    dtypes = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64,
                              torch.uint8, torch.bool, torch.complex64])
    specials = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 1e-310, 0.0, 3e38])
    index_values = st.sampled_from([-(2**31), -(2**31) + 1, -2, -1, 5, 11, 99, 2**20, 2**31 - 1])
    shapes = st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 7]), min_size=0, max_size=4).map(tuple)

    def describe(kind, detail=""):
        return f"{kind}{detail}"

    def reshape(shape):
        def apply(value):
            if isinstance(value, torch.Tensor):
                dtype = value.dtype if value.dtype != torch.bool else torch.bool
                return (torch.zeros(shape, dtype=dtype) if not dtype.is_floating_point
                        else torch.randn(shape, dtype=torch.float64).to(dtype))
            return value
        apply.description = describe("shape", str(shape))
        return apply

    def retype(dtype):
        def apply(value):
            return value.to(dtype) if isinstance(value, torch.Tensor) else value
        apply.description = describe("dtype ", str(dtype))
        return apply

    def fill(special, fraction):
        def apply(value):
            if isinstance(value, torch.Tensor) and value.dtype.is_floating_point and value.numel():
                value = value.contiguous().clone()
                flat = value.view(-1)
                flat[: max(1, int(fraction * flat.numel()))] = special
            return value
        apply.description = describe("fill ", f"{special} x{fraction}")
        return apply

    def poke_index(bad, position):
        def apply(value):
            if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point and value.numel():
                value = value.contiguous().clone()
                flat = value.view(-1)
                limit = torch.iinfo(value.dtype).max if value.dtype != torch.bool else 1
                flat[position % flat.numel()] = min(bad, limit) if bad > 0 else (bad if value.dtype not in (
                    torch.uint8, torch.bool) else 0)
            return value
        apply.description = describe("index ", f"{bad} at {position}")
        return apply

    def empty(dim):
        def apply(value):
            if isinstance(value, torch.Tensor) and value.dim():
                return value.narrow(dim % value.dim(), 0, 0)
            return value
        apply.description = describe("empty dim ", str(dim))
        return apply

    def strided():
        def apply(value):
            if isinstance(value, torch.Tensor) and value.dim() >= 2:
                return value.transpose(0, -1).contiguous().transpose(0, -1)[..., ::1]
            if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() >= 2:
                return torch.stack([value, value], 1)[:, 0]
            return value
        apply.description = "non-contiguous"
        return apply

    def replace_scalar(number):
        def apply(value):
            if isinstance(value, bool):
                return not value
            if isinstance(value, int):
                return number
            if isinstance(value, float):
                return float(number)
            if isinstance(value, list):
                return [number] * len(value) if value else [number]
            if isinstance(value, str):
                return "median"
            return value
        apply.description = describe("scalar ", str(number))
        return apply

    def drop():
        def apply(value):
            if isinstance(value, list):
                return value[:-1]
            if isinstance(value, torch.Tensor) and value.dim():
                return value[..., :-1] if value.shape[-1] else value
            return value
        apply.description = "shorter"
        return apply

    pokes = st.tuples(index_values, st.integers(0, 1000)).map(lambda t: poke_index(*t))
    return st.one_of(
        shapes.map(reshape), dtypes.map(retype),
        st.tuples(specials, st.sampled_from([0.0, 0.5, 1.0])).map(lambda t: fill(*t)),
        pokes, pokes,  # twice: out-of-range indices are the memory-safety question
        st.integers(-3, 3).map(empty), st.just(strided()), st.sampled_from(ABSURD_INTS).map(replace_scalar),
        st.just(drop()),
    )


def _fuzzer(name, op, valid, mutations, examples):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import torch

    # Half the changes go to the integer tensors (indices), where a missed check reads out of bounds.
    index_args = [i for i, value in enumerate(valid) if isinstance(value, torch.Tensor) and not value.is_floating_point()]
    positions = st.integers(0, len(valid) - 1)
    if index_args:
        positions = st.one_of(positions, st.sampled_from(index_args))

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(positions, mutations), min_size=1, max_size=2))
    def fuzz(changes):
        args = list(valid)
        for index, mutate in changes:
            try:
                args[index] = mutate(args[index])
            except Exception:  # a mutation that does not apply to this value (e.g. a bool into a dtype)
                pass
        described = [f"arg {index}: {mutate.description}" for index, mutate in changes]
        print(json.dumps({"op": name, "changes": described}), flush=True)
        try:
            op(*args)
        except Exception:  # any clean Python error is fine; only a crash is not
            pass

    return fuzz


def _run_family(family: str, examples: int) -> None:
    table = _valid_arguments()
    mutations = _mutations()
    for name in FAMILY_OPS[family]:
        op, valid = table[name]
        op(*valid)  # the valid call works
        _fuzzer(name, op, valid, mutations, examples)()
    print(json.dumps({"done": family}), flush=True)


# ---- the tests --------------------------------------------------------------------------------------

def test_no_argument_crashes_an_op(compiled):
    """Fuzzes every op family in one subprocess (one import of torch); a crash names the op and
    the broken arguments of the example that killed it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "all", str(EXAMPLES)],
                            capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    last = lines[-1] if lines else "nothing"
    assert result.returncode == 0, (f"the fuzz crashed (return code {result.returncode}) at {last}\n"
                                    f"{result.stderr[-3000:]}")
    finished = [json.loads(line)["done"] for line in lines if '"done"' in line]
    assert finished == list(FAMILIES), last


if __name__ == "__main__":
    chosen = FAMILIES if sys.argv[1] == "all" else (sys.argv[1],)
    for family in chosen:
        _run_family(family, int(sys.argv[2]) if len(sys.argv) > 2 else EXAMPLES)
