"""GPU benchmarks of meshrec's compiled ops against their well-known alternatives, in one run.

Run by ``tools/gpu_check.sh`` (which builds meshrec for the GPU first); standalone:

    python tools/gpu_bench.py --device cuda --markdown report.md --json report.json
    python tools/gpu_bench.py --device cpu --quick      # small sizes: checks the logic, no GPU

Cases (issue 14): SMPL forward at batch 1 / 64 / 4096 (and forward + backward at 64) against
smplx.SMPL and meshrec's own plain-PyTorch path; a 3x3x3 submanifold sparse convolution on 100k
voxels of a room surface against dense ``conv3d`` on the same grid (and spconv's SubMConv3d when
spconv is importable); PA-MPJPE of 10,000 x 14 joints against batched ``torch.linalg.svd``; the
inside-mesh test of a 6890-vertex body against 100k points and the nearest scene point of 6890
vertices among 1M points, against the pure-PyTorch references.

Every case checks its result against an independent computation before it is timed; a wrong
result is reported as ``MISMATCH`` and makes the exit status 1. Times are wall-clock medians of
repeated calls, each followed by ``torch.cuda.synchronize()`` (what a caller waits for),
after warm-up calls; the minimum is kept too. The output is a markdown section in the layout of
benchmarks/RESULTS.md (paste it there) plus, optionally, the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

# The alternatives and the scene the CPU benchmarks use (benchmarks/), one definition each.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from test_bench_metrics import room_scene, torch_svd_pa_mpjpe  # noqa: E402
from test_bench_sparse import dense_conv  # noqa: E402


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    rounds: int


@dataclass
class Row:
    group: str
    case: str
    timings: dict[str, Timing | None] = field(default_factory=dict)  # implementation -> timing (None: n/a)
    check: str = "ok"
    note: str = ""


class Bench:
    """Times callables on one device within a per-measurement time budget."""

    def __init__(self, device: torch.device, quick: bool, budget_s: float):
        self.device = device
        self.quick = quick
        self.budget_s = budget_s
        self.rows: list[Row] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object], rounds: int | None = None, warmup: int = 2) -> Timing:
        if self.quick:  # a dry run proves the code path, not the figures
            warmup, rounds = 1, 2 if rounds is None else min(rounds, 2)
        for _ in range(warmup if rounds is None else min(warmup, 1)):
            fn()
        self.sync()
        times: list[float] = []
        start = time.perf_counter()
        limit = rounds if rounds is not None else 1000
        while len(times) < limit:
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
            if rounds is None and len(times) >= 3 and time.perf_counter() - start > self.budget_s:
                break
        return Timing(statistics.median(times) * 1e3, min(times) * 1e3, len(times))

    def case(self, group: str, case: str) -> Row:
        row = Row(group, case)
        self.rows.append(row)
        return row


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> str:
    """'ok', or 'MISMATCH (max abs diff ...)'."""
    try:
        torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=rtol)
        return "ok"
    except AssertionError:
        diff = (actual.double() - expected.double()).abs().nan_to_num(math.inf).max().item()
        return f"MISMATCH (max abs diff {diff:.3g})"


@contextlib.contextmanager
def reference_path():
    """Runs meshrec's modules on their pure-PyTorch references: every module that imported
    ``use_compiled`` sees it return False."""
    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("meshrec") and callable(getattr(module, "use_compiled", None)):
            patched.append((module, module.use_compiled))
            module.use_compiled = lambda tensor: False
    try:
        yield
    finally:
        for module, original in patched:
            module.use_compiled = original


# ---- SMPL -------------------------------------------------------------------------------------


def bench_smpl(b: Bench) -> None:
    from meshrec.body import SMPL, load_body_model_arrays
    from meshrec.testing import write_synthetic_smpl

    try:
        import smplx
    except ImportError:
        smplx = None
    folder = Path(tempfile.mkdtemp(prefix="meshrec-gpu-bench-"))
    model_file = write_synthetic_smpl(folder)
    device = b.device
    ours = SMPL(model_file, create_transl=False).to(device)
    theirs = None
    if smplx is not None:
        arrays = load_body_model_arrays(model_file)
        theirs = smplx.SMPL(model_path=str(folder), data_struct=smplx.utils.Struct(**arrays),
                            create_transl=False).to(device)

    def inputs(batch: int):
        generator = torch.Generator().manual_seed(batch)
        pose = (torch.rand(batch, 72, generator=generator) - 0.5).to(device)
        betas = torch.randn(batch, 10, generator=generator).to(device)
        return dict(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])

    for batch in [1, 4] if b.quick else [1, 64, 4096]:
        row = b.case("SMPL forward (float32)", f"batch {batch}")
        kwargs = inputs(batch)
        with torch.no_grad():
            out = ours(**kwargs)
            if theirs is not None:
                expected = theirs(**kwargs)
                row.check = close(out.vertices, expected.vertices, atol=1e-4)
            else:
                with reference_path():
                    expected = ours(**kwargs)
                row.check = close(out.vertices, expected.vertices, atol=1e-4)
                row.note = "smplx not installed: checked against meshrec's plain-PyTorch path"
            row.timings["meshrec"] = b.time(lambda: ours(**kwargs))
            with reference_path():
                row.timings["reference"] = b.time(lambda: ours(**kwargs))
            row.timings["alternative"] = b.time(lambda: theirs(**kwargs)) if theirs is not None else None
        row.note = row.note or "alternative: smplx.SMPL"

    batch = 4 if b.quick else 64
    row = b.case("SMPL forward + backward (float32)", f"batch {batch}")
    kwargs = {k: v.clone().requires_grad_() for k, v in inputs(batch).items()}
    weights = torch.randn(batch, 6890, 3, generator=torch.Generator().manual_seed(1)).to(device)

    def step(model):
        grads = torch.autograd.grad((model(**kwargs).vertices * weights).sum(), list(kwargs.values()))
        return torch.cat([g.flatten() for g in grads])

    got = step(ours)
    if theirs is not None:
        row.check = close(got, step(theirs), atol=1e-3, rtol=1e-4)
    row.timings["meshrec"] = b.time(lambda: step(ours))
    with reference_path():
        row.timings["reference"] = b.time(lambda: step(ours))
    row.timings["alternative"] = b.time(lambda: step(theirs)) if theirs is not None else None
    row.note = "alternative: smplx.SMPL" if theirs is not None else "smplx not installed"


# ---- sparse convolution -------------------------------------------------------------------------


def spconv_layer(coords: torch.Tensor, features: torch.Tensor, weight: torch.Tensor):
    """spconv 2.x SubMConv3d on the same voxels and weights, or None when spconv is absent."""
    try:
        import spconv.pytorch as spconv
    except Exception:  # noqa: BLE001  (absent, or a build for another CUDA)
        return None
    from meshrec import ops

    low = coords[:, 1:].amin(0)
    indices = torch.cat([coords[:, :1], coords[:, 1:] - low], 1).int().contiguous()
    shape = [int(s) + 1 for s in (coords[:, 1:] - low).amax(0)]
    layer = spconv.SubMConv3d(weight.shape[1], weight.shape[2], 3, bias=False, indice_key="bench").to(features.device)
    offsets = ops.kernel_offsets(3, device=features.device) + 1
    kernel = weight.new_zeros(3, 3, 3, weight.shape[1], weight.shape[2])
    kernel[offsets[:, 0], offsets[:, 1], offsets[:, 2]] = weight
    with torch.no_grad():
        # spconv 2.x keeps (out, k, k, k, in) weights
        layer.weight.copy_(kernel.permute(4, 0, 1, 2, 3) if layer.weight.shape[0] == weight.shape[2] else kernel)

    def run():
        tensor = spconv.SparseConvTensor(features, indices, shape, 1)
        return layer(tensor).features

    return run


def bench_sparse(b: Bench) -> None:
    from meshrec import ops
    from meshrec.ops import reference
    from meshrec.testing import surface_voxel_coords

    device = b.device
    count = 2_000 if b.quick else 100_000
    coords = surface_voxel_coords(count).to(device)
    neighbors = ops.kernel_map(coords, coords, ops.kernel_offsets(3, device=device))
    reverse = ops.invert_kernel_map(neighbors, coords.shape[0])
    voxels = coords.shape[0]
    check_rows = torch.arange(0, voxels, 97, device=device)
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    for channels in [16] if b.quick else [16, 32, 64, 128]:
        row = b.case(f"sparse conv 3x3x3, {voxels} voxels (float32)", f"{channels} channels, forward")
        generator = torch.Generator().manual_seed(channels)
        features = torch.randn(voxels, channels, generator=generator).to(device)
        weight = (torch.randn(27, channels, channels, generator=generator) / (27 * channels) ** 0.5).to(device)
        with torch.no_grad():
            out = ops.sparse_conv(features, weight, neighbors, reverse)
            expected = reference.sparse_conv(features.double(), weight.double(), neighbors[check_rows])
            row.check = close(out[check_rows], expected, atol=1e-4, rtol=1e-4)
            dense = dense_conv(coords, features, weight)
            # cuDNN may run conv3d in TF32 (torch's default): its own check is looser.
            dense_check = close(dense[check_rows], expected, atol=5e-3 if tf32 else 1e-4, rtol=1e-2 if tf32 else 1e-4)
            row.timings["meshrec"] = b.time(lambda: ops.sparse_conv(features, weight, neighbors, reverse))
            row.timings["reference"] = b.time(lambda: reference.sparse_conv(features, weight, neighbors))
            row.timings["alternative"] = b.time(lambda: dense_conv(coords, features, weight))
            notes = ["alternative: dense conv3d" + (" (cuDNN TF32 allowed, torch's default)" if tf32 else "")]
            if dense_check != "ok":
                notes.append(f"dense conv3d {dense_check}")
            spconv_run = spconv_layer(coords, features, weight)
            if spconv_run is not None:
                spconv_out = spconv_run()
                notes.append(f"spconv {b.time(spconv_run).median_ms:.3f} ms"
                             f" (check: {close(spconv_out[check_rows], expected, atol=5e-3, rtol=1e-2)})")
            row.note = "; ".join(notes)
    if importlib.util.find_spec("spconv") is None:
        b.rows[-1].note += "; spconv is not installed here"

    channels = 16 if b.quick else 64
    row = b.case(f"sparse conv 3x3x3, {voxels} voxels (float32)", f"{channels} channels, forward + backward")
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(voxels, channels, generator=generator).to(device).requires_grad_()
    weight = (torch.randn(27, channels, channels, generator=generator) / (27 * channels) ** 0.5).to(device).requires_grad_()
    upstream = torch.randn(voxels, channels, generator=generator).to(device)

    def step(conv):
        return torch.autograd.grad((conv() * upstream).sum(), [features, weight])

    got = step(lambda: ops.sparse_conv(features, weight, neighbors, reverse))
    want = step(lambda: reference.sparse_conv(features, weight, neighbors))
    row.check = close(torch.cat([g.flatten() for g in got]), torch.cat([g.flatten() for g in want]), atol=1e-3, rtol=1e-3)
    row.timings["meshrec"] = b.time(lambda: step(lambda: ops.sparse_conv(features, weight, neighbors, reverse)))
    row.timings["reference"] = b.time(lambda: step(lambda: reference.sparse_conv(features, weight, neighbors)))
    row.timings["alternative"] = None

    row = b.case(f"sparse kernel map ({voxels} voxels)", "submanifold 3x3x3")
    offsets = ops.kernel_offsets(3, device=device)
    got = ops.kernel_map(coords, coords, offsets)
    row.check = "ok" if torch.equal(got, reference.kernel_map(coords, coords, offsets)) else "MISMATCH"
    row.timings["meshrec"] = b.time(lambda: ops.kernel_map(coords, coords, offsets))
    row.timings["reference"] = b.time(lambda: reference.kernel_map(coords, coords, offsets))
    row.timings["alternative"] = None


# ---- metrics ----------------------------------------------------------------------------------


def bench_metrics(b: Bench) -> None:
    from meshrec.metrics import pa_mpjpe
    from meshrec.ops import nearest_points, reference, winding_number
    from meshrec.testing import synthetic_smpl_arrays

    device = b.device
    samples = 200 if b.quick else 10_000
    g = torch.Generator().manual_seed(0)
    pred64 = torch.randn(samples, 14, 3, generator=g, dtype=torch.float64) * 0.3
    target64 = pred64 + 0.05 * torch.randn(samples, 14, 3, generator=g, dtype=torch.float64)
    expected = torch_svd_pa_mpjpe(pred64, target64)  # float64 on the CPU: the independent check
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        row = b.case(f"PA-MPJPE, {samples} x 14 joints", name)
        pred, target = pred64.to(device, dtype), target64.to(device, dtype)
        row.check = close(pa_mpjpe(pred, target).cpu(), expected, atol=1e-5 if dtype == torch.float64 else 1e-3)
        row.timings["meshrec"] = b.time(lambda: pa_mpjpe(pred, target))
        with reference_path():
            row.timings["reference"] = b.time(lambda: pa_mpjpe(pred, target))
        row.timings["alternative"] = b.time(lambda: torch_svd_pa_mpjpe(pred, target))
        row.note = "alternative: batched torch.linalg.svd"
    row = b.case(f"PA-MPJPE, {samples} x 14 joints", "float32, forward + backward")
    pred = pred64.to(device, torch.float32).requires_grad_()
    target = target64.to(device, torch.float32)

    def step(fn):
        return torch.autograd.grad(fn(pred, target).sum(), pred)[0]

    row.check = close(step(pa_mpjpe), step(torch_svd_pa_mpjpe), atol=1e-3, rtol=1e-3)
    row.timings["meshrec"] = b.time(lambda: step(pa_mpjpe))
    with reference_path():
        row.timings["reference"] = b.time(lambda: step(pa_mpjpe))
    row.timings["alternative"] = b.time(lambda: step(torch_svd_pa_mpjpe))
    row.note = "alternative: batched torch.linalg.svd"

    arrays = synthetic_smpl_arrays()
    vertices = torch.tensor(arrays["v_template"], dtype=torch.float64)
    faces = torch.tensor(arrays["f"].astype("int64"))
    count = 500 if b.quick else 100_000
    lower, upper = vertices.amin(0) - 0.5, vertices.amax(0) + 0.5  # a scene crop around the body
    points = lower + (upper - lower) * torch.rand(count, 3, generator=g, dtype=torch.float64)
    row = b.case("inside-mesh (winding numbers), float64", f"{vertices.shape[0]}-vertex body vs {count} points")
    v, f, p = vertices.to(device), faces.to(device), points.to(device)
    winding = winding_number(p, v, f)
    check = slice(0, count, 97)
    want = reference.winding_number(points[None, check], vertices[None], faces)[0]
    row.check = close(winding[check].round().cpu(), want.round(), atol=0)
    row.timings["meshrec"] = b.time(lambda: winding_number(p, v, f))
    row.timings["reference"] = b.time(lambda: reference.winding_number(p[None], v[None], f)[0], rounds=3)
    row.timings["alternative"] = None
    row.note = "reference: brute force over every face, 256 points at a time"

    count = 5_000 if b.quick else 1_000_000
    scene = room_scene(count, g)
    body = vertices + torch.tensor([0.0, 1.17, 0.0], dtype=torch.float64)  # standing on the floor
    row = b.case("nearest scene point, float64", f"{body.shape[0]} vertices vs {count} points")
    s, q = scene.to(device), body.to(device)
    distance, index = nearest_points(q, s)
    want = torch.cdist(body[::211], scene, compute_mode="donot_use_mm_for_euclid_dist").amin(-1)
    row.check = close(distance[::211].cpu(), want, atol=1e-9)
    if row.check == "ok":
        row.check = close(torch.linalg.vector_norm(q - s[index], dim=-1), distance, atol=1e-12)
    row.timings["meshrec"] = b.time(lambda: nearest_points(q, s))
    row.timings["reference"] = b.time(lambda: reference.nearest_points(q[None], s[None]), rounds=3)
    row.timings["alternative"] = b.time(lambda: cdist_nearest(q, s), rounds=3)
    row.note = "reference: chunked float64 matrix products; alternative: torch.cdist + amin over 16k-point chunks"


def cdist_nearest(queries: torch.Tensor, points: torch.Tensor, chunk: int = 16_384) -> torch.Tensor:
    """The obvious PyTorch way: torch.cdist against chunks of the cloud (memory stays bounded)."""
    best = torch.full(queries.shape[:1], math.inf, dtype=queries.dtype, device=queries.device)
    for start in range(0, points.shape[0], chunk):
        best = torch.minimum(best, torch.cdist(queries, points[start : start + chunk]).amin(-1))
    return best


# ---- report -----------------------------------------------------------------------------------

GROUPS = {"smpl": bench_smpl, "sparse": bench_sparse, "metrics": bench_metrics}


def fmt(timing: Timing | None) -> str:
    if timing is None:
        return ""
    value = timing.median_ms
    text = f"{value * 1e3:.0f} us" if value < 1 else f"{value:.3g} ms" if value < 1000 else f"{value / 1e3:.3g} s"
    return text if timing.rounds > 1 else text + " (1 run)"


def speedup(row: Row, other: str) -> str:
    ours, theirs = row.timings.get("meshrec"), row.timings.get(other)
    if ours is None or theirs is None or ours.median_ms <= 0:
        return ""
    return f"{theirs.median_ms / ours.median_ms:.1f}x"


def environment(device: torch.device) -> dict:
    import meshrec

    info = meshrec.info()
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": str(device),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "meshrec": info["meshrec"],
        "op_backend": info["op_backend"],
        "compiled_backends": info["compiled_backends"],
        "cuda_archs": info["cuda_archs"],
        "compiled_library_error": info["compiled_library_error"],
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        env["gpu"] = properties.name
        env["capability"] = f"{properties.major}.{properties.minor}"
        env["multiprocessors"] = properties.multi_processor_count
        env["memory_gib"] = round(properties.total_memory / 2**30, 1)
    else:
        env["processor"] = platform.processor() or platform.machine()
    return env


def markdown(env: dict, rows: list[Row], failures: list[str], quick: bool) -> str:
    machine = env.get("gpu", env.get("processor", "?"))
    lines = [f"## {'Dry run (quick sizes)' if quick else 'GPU'}: {machine}, {env['date']}", ""]
    if "gpu" in env:
        lines.append(f"{env['gpu']} (compute capability {env['capability']}, {env['multiprocessors']} SMs, "
                     f"{env['memory_gib']} GiB); ")
    lines.append(f"torch {env['torch']} (CUDA {env['torch_cuda']}), python {env['python']}; meshrec {env['meshrec']}, "
                 f"op backend {env['op_backend']}, compiled for {', '.join(env['compiled_backends']) or 'nothing'}"
                 f" (CUDA archs {env['cuda_archs'] or '-'}). Wall-clock medians after warm-up, synchronised; "
                 "speed-ups are medians' ratios in this run.")
    lines.append("")
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            lines += ["", f"### {group}", "",
                      "| case | meshrec | plain PyTorch (reference) | alternative | vs reference | vs alternative | check | note |",
                      "|---|---:|---:|---:|---:|---:|---|---|"]
        lines.append(f"| {row.case} | {fmt(row.timings.get('meshrec'))} | {fmt(row.timings.get('reference'))} | "
                     f"{fmt(row.timings.get('alternative'))} | {speedup(row, 'reference')} | "
                     f"{speedup(row, 'alternative')} | {row.check} | {row.note} |")
    if failures:
        lines += ["", "### Failed benchmark groups", ""] + [f"- {failure}" for failure in failures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (a dry run of the logic)")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds of timed calls per measurement")
    parser.add_argument("--markdown", type=Path, help="write the markdown report here (else print it)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device is visible; use --device cpu --quick for a dry run", file=sys.stderr)
        return 2
    bench = Bench(device, args.quick, args.budget)
    failures: list[str] = []
    for name in [n.strip() for n in args.groups.split(",") if n.strip()]:
        if name not in GROUPS:
            parser.error(f"unknown group {name!r}; choose from {', '.join(GROUPS)}")
        started = time.perf_counter()
        try:
            GROUPS[name](bench)
        except Exception:  # noqa: BLE001  (one group's failure must not hide the others' figures)
            failures.append(f"{name}: {traceback.format_exc().strip().splitlines()[-1]}")
            traceback.print_exc()
        print(f"gpu_bench: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    env = environment(device)
    text = markdown(env, bench.rows, failures, args.quick)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    if args.json:
        payload = {"environment": env, "failures": failures,
                   "rows": [asdict(row) for row in bench.rows]}
        args.json.write_text(json.dumps(payload, indent=2))
    mismatches = [row for row in bench.rows if row.check != "ok"]
    for row in mismatches:
        print(f"gpu_bench: {row.group} / {row.case}: {row.check}", file=sys.stderr)
    return 1 if failures or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
