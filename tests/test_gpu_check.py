"""tools/gpu_check.sh and tools/gpu_bench.py (the one-shot GPU check, docs/cuda.md): their logic,
proved on a machine without a GPU. The dry run does everything except what needs the device."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "tools" / "gpu_check.sh"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def has_gpu() -> bool:
    if torch.cuda.is_available():
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("meshrec_tools_gpu_bench", REPOSITORY / "tools" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPOSITORY)


@needs_bash
def test_help_lists_the_options():
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--dry-run", "--out", "--python", "--wheels", "--arch", "--deadline", "--skip-build", "--no-install"):
        assert option in result.stdout


@needs_bash
def test_unknown_option_is_refused():
    result = run_script("--frobnicate")
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr


@needs_bash
@pytest.mark.skipif(has_gpu(), reason="a GPU is visible here")
def test_a_gpu_run_without_a_gpu_stops_at_once_and_says_why(tmp_path):
    result = run_script("--out", str(tmp_path))
    assert result.returncode == 1
    report = (tmp_path / "gpu_check_report.md").read_text()
    assert "| find the GPU | FAIL |" in report
    assert "nvidia-smi sees no GPU; use --dry-run" in report
    assert not (tmp_path / "gpu_check_bench.json").exists()  # nothing ran past the check


def test_bench_close_reports_mismatches(gpu_bench):
    a = torch.tensor([1.0, 2.0, 3.0])
    assert gpu_bench.close(a, a.double(), atol=1e-6) == "ok"
    verdict = gpu_bench.close(a, a + torch.tensor([0.0, 0.5, 0.0]), atol=1e-6)
    assert verdict.startswith("MISMATCH") and "0.5" in verdict


def test_bench_reference_path_switches_every_module_and_restores(gpu_bench):
    import meshrec.ops.metrics
    import meshrec.ops.smpl
    import meshrec.ops.sparse

    modules = (meshrec.ops.metrics, meshrec.ops.smpl, meshrec.ops.sparse)
    originals = [module.use_compiled for module in modules]
    cpu = torch.zeros(1)
    with gpu_bench.reference_path():
        assert all(module.use_compiled(cpu) is False for module in modules)
    assert [module.use_compiled for module in modules] == originals


def test_bench_markdown_has_one_table_per_group_with_ratios(gpu_bench):
    Timing, Row = gpu_bench.Timing, gpu_bench.Row
    rows = [
        Row("SMPL forward (float32)", "batch 1", {"meshrec": Timing(0.5, 0.4, 100), "reference": Timing(2.0, 1.9, 50),
                                                   "alternative": Timing(1.5, 1.4, 60)}, "ok", "alternative: smplx.SMPL"),
        Row("SMPL forward (float32)", "batch 64", {"meshrec": Timing(4.0, 3.9, 20), "reference": None,
                                                    "alternative": Timing(1200.0, 1200.0, 1)}, "MISMATCH (max abs diff 1)"),
        Row("PA-MPJPE", "float64", {"meshrec": Timing(3.0, 2.9, 10)}),
    ]
    env = {"date": "2026-01-01 00:00 UTC", "gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": 132,
           "memory_gib": 79.2, "torch": "2.13.0", "torch_cuda": "13.0", "python": "3.12.3", "meshrec": "0.1.0",
           "op_backend": "compiled", "compiled_backends": ["cpu", "cuda"], "cuda_archs": "9.0"}
    text = gpu_bench.markdown(env, rows, ["sparse: RuntimeError: boom"], quick=False)
    assert text.startswith("## GPU: NVIDIA H100 80GB HBM3")
    assert text.count("### SMPL forward (float32)") == 1 and text.count("### PA-MPJPE") == 1
    assert "| batch 1 | 500 us | 2 ms | 1.5 ms | 4.0x | 3.0x | ok | alternative: smplx.SMPL |" in text
    assert "| batch 64 | 4 ms |  | 1.2 s (1 run) |  | 300.0x | MISMATCH (max abs diff 1) |  |" in text
    assert "- sparse: RuntimeError: boom" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_bench_on_cuda_without_a_gpu_says_so(gpu_bench, capsys):
    assert gpu_bench.main(["--device", "cuda"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quick_run_checks_and_reports_every_case(gpu_bench, tmp_path):
    markdown, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    assert gpu_bench.main(["--device", "cpu", "--quick", "--groups", "metrics",
                           "--markdown", str(markdown), "--json", str(raw)]) == 0
    payload = json.loads(raw.read_text())
    cases = {(row["group"], row["case"]) for row in payload["rows"]}
    assert len(cases) == 5 and payload["failures"] == []
    assert all(row["check"] == "ok" and row["timings"]["meshrec"]["rounds"] >= 1 for row in payload["rows"])
    assert "### PA-MPJPE, 200 x 14 joints" in markdown.read_text()


@needs_bash
@pytest.mark.slow
def test_dry_run_plans_the_tests_and_runs_the_benchmarks_on_the_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = run_script("--dry-run", "--skip-build", "--python", sys.executable, "--out", str(out),
                        "--workdir", str(work), "--deadline", "1500", timeout=1600)
    report = (out / "gpu_check_report.md").read_text()
    assert result.returncode == 0, report + (out / "gpu_check.log").read_text()[-4000:]
    assert report.startswith("# meshrec GPU check (dry run: no device work)")
    for step in ("copy the tree", "meshrec info", "CUDA tests (collected, not run)", "benchmarks (CPU, quick sizes)"):
        assert f"| {step} | PASS |" in report, step
    assert "| build | SKIP |" in report
    planned = report.split("pytest -k cuda: ", 1)[1].split()[0]  # "94/548"
    assert int(planned.split("/")[0]) > 0
    assert (work / "setup.py").is_file() and not list((work / "meshrec").glob("_C*.so"))
    bench = json.loads((out / "gpu_check_bench.json").read_text())
    groups = {row["group"].split(" (")[0].split(",")[0] for row in bench["rows"]}
    assert {"SMPL forward", "sparse conv 3x3x3", "PA-MPJPE", "inside-mesh", "nearest scene point"} <= groups
    assert all(row["check"] == "ok" for row in bench["rows"]), bench["rows"]


@needs_bash
@pytest.mark.slow
@pytest.mark.skipif(has_gpu(), reason="a GPU is visible here")
def test_gpu_mode_reports_each_test_and_fails_what_needs_the_device(tmp_path):
    # A stand-in nvidia-smi takes the script down its GPU path on this machine: the per-test
    # report is written, and the steps that need the device fail instead of passing vacuously.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text('#!/bin/sh\n'
                                     'case "$*" in *query-gpu*) echo "Fake GPU, 1.0, 9.0";; *) echo "GPU 0: Fake GPU";; esac\n')
    (fake / "nvidia-smi").chmod(0o755)
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", str(SCRIPT), "--skip-build", "--no-install", "--python", sys.executable,
                             "--out", str(out), "--workdir", str(work), "--deadline", "1500"],
                            capture_output=True, text=True, timeout=1600, cwd=REPOSITORY, env=env)
    report = (out / "gpu_check_report.md").read_text()
    assert result.returncode == 1, report
    assert "- device: Fake GPU (driver 1.0, compute capability 9.0)" in report
    assert "TORCH_CUDA_ARCH_LIST=9.0" in report
    if torch.version.cuda is None:
        assert "| CUDA torch | FAIL | 0 |" in report and "(--no-install: going on without)" in report
    assert "| ctest (tests/cpp, CUDA kernels) | FAIL | 0 | no CMake build |" in report
    assert "| pytest -k cuda | PASS |" in report  # every device case skipped, none failed
    table = report.split("## CUDA tests (pytest -k cuda)", 1)[1]
    assert "| test | result | seconds |" in table
    assert re.search(r"\[[^]|]*cuda[^]|]*\] \| skipped \|", table), table[:2000]
    assert "| benchmarks (GPU) | FAIL |" in report  # no device for gpu_bench.py --device cuda
