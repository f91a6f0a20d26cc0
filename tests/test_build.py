"""The build: one source list for setup.py and CMake, torch-free .cu files, the compiled backend."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import meshrec

REPOSITORY = Path(__file__).resolve().parents[1]
CSRC = REPOSITORY / "csrc"


def listed_sources() -> dict[str, str]:
    sources = {}
    for line in (CSRC / "sources.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            kind, path = line.split()
            assert path not in sources, f"{path} listed twice"
            sources[path] = kind
    return sources


def test_every_source_is_listed_once_with_the_right_kind():
    sources = listed_sources()
    on_disk = {str(p.relative_to(REPOSITORY)) for p in CSRC.rglob("*") if p.suffix in {".cpp", ".cu"}}
    assert set(sources) == on_disk
    for path, kind in sources.items():
        if path.endswith(".cu"):
            assert kind == "cuda", path
        elif path.endswith("_cuda.cpp"):
            assert kind == "cuda_binding", path
        else:
            assert kind in {"core", "python"}, path


def test_setup_py_reads_the_source_list():
    assert '"sources.txt"' in (REPOSITORY / "setup.py").read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_compiles_exactly_the_listed_sources(tmp_path):
    """Configures the CMake build and reads what it will compile (compile_commands.json): the
    listed core sources, every listed .cu when nvcc is found, and only C++ tests besides."""
    configure = subprocess.run(
        ["cmake", "-S", str(REPOSITORY), "-B", str(tmp_path), f"-DPython3_EXECUTABLE={sys.executable}"],
        capture_output=True, text=True, timeout=600)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    import json

    compiled = {str(Path(entry["file"]).resolve().relative_to(REPOSITORY))
                for entry in json.loads((tmp_path / "compile_commands.json").read_text())}
    sources = listed_sources()
    expected = {path for path, kind in sources.items() if kind == "core"}
    if "CUDA kernels ON" in configure.stdout:
        expected |= {path for path, kind in sources.items() if kind == "cuda"}
    if "torch ops library OFF" in configure.stdout:
        # a CUDA torch whose CMake config would need cuBLAS & co. in the CUDA toolkit, which has
        # only nvcc and the runtime: kernels and their tests only (docs/cuda.md)
        assert torch.version.cuda is not None, configure.stdout
        expected -= {path for path, kind in sources.items() if kind == "core"}
    else:
        assert "torch ops library ON" in configure.stdout, configure.stdout
    if ("torch ops library ON" in configure.stdout and "CUDA kernels ON" in configure.stdout
            and torch.version.cuda is not None):
        expected |= {path for path, kind in sources.items() if kind == "cuda_binding"}
    library = {path for path in compiled if not path.startswith("tests/")}
    assert library == expected, f"CMake compiles {sorted(library ^ expected)} differently from csrc/sources.txt"


def _includes(path: Path, seen: set[Path]) -> set[Path]:
    if path in seen:
        return seen
    seen.add(path)
    for match in re.finditer(r'#include\s+"([^"]+)"', path.read_text()):
        target = (path.parent / match.group(1)).resolve()
        if target.exists():
            _includes(target, seen)
    return seen


def test_cuda_sources_include_no_torch_headers():
    for cu in CSRC.rglob("*.cu"):
        for path in _includes(cu, set()):
            text = path.read_text()
            assert not re.search(r"#include\s+[<\"](torch|ATen|c10)/", text), f"{path} (included by {cu}) includes torch"


def test_bindings_use_no_cuda_syntax():
    for binding in CSRC.rglob("*_cuda.cpp"):
        assert "<<<" not in binding.read_text() and "__global__" not in binding.read_text()


@pytest.mark.skipif(os.environ.get("MESHREC_DISABLE_COMPILED_OPS") == "1", reason="reference-only run")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenMP flags are set for Linux builds")
def test_kernels_are_built_with_openmp_when_torch_is():
    # at::parallel_for is a header template: without OpenMP in meshrec's own library it runs
    # every CPU kernel on one thread, whatever torch.set_num_threads says.
    assert meshrec.extension.build_info()["openmp"] == torch.backends.openmp.is_available()


@pytest.mark.skipif(os.environ.get("MESHREC_DISABLE_COMPILED_OPS") == "1", reason="reference-only run")
def test_compiled_cpu_backend_is_active():
    report = meshrec.info()
    assert report["op_backend"] == "compiled", report["compiled_library_error"]
    assert "cpu" in report["compiled_backends"]
    assert report["build"]["torch_version"] == torch.__version__.split("+")[0]
    assert report["build"]["meshrec_version"] == meshrec.__version__
    result = subprocess.run([sys.executable, "-m", "meshrec", "info"], capture_output=True, text=True)
    assert re.search(r"compiled backends\s+cpu", result.stdout), result.stdout
    if report["build"]["cuda"]:
        assert report["cuda_archs"]
