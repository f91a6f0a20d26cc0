#!/usr/bin/env bash
# The CUDA build, checked on a machine WITHOUT a GPU: every .cu kernel and every *_cuda.cpp torch
# binding compiles and links into meshrec._C, the library imports, `meshrec info` reports the CUDA
# backend compiled but no device, every op with a CPU kernel also has a CUDA kernel registered,
# the CPU test suite passes against this build, and the GPU script's dry run passes.
#
#   tools/cuda_build_check.sh            (CI: .ci/run calls it when MESHREC_CI_CUDA=1)
#
# It never touches the checkout's own build: the tree is copied to a work folder and installed
# (editable) into a virtual environment of its own holding the CUDA build of torch from PyPI,
# with the nvidia-* wheels torch depends on. nvcc comes from the system (CUDA_HOME, or the nvcc
# on PATH); its major version must match torch's CUDA (torch 2.13.0 from PyPI: CUDA 13.0).
#
# Environment:
#   MESHREC_CUDA_TORCH        torch version (default 2.13.0, the CI's CPU torch)
#   MESHREC_CUDA_VENV         the venv, kept between runs as a cache
#                             (default ~/.cache/meshrec/cuda-venv-torch$MESHREC_CUDA_TORCH)
#   MESHREC_CUDA_WORKDIR      the copy of the tree that is built (default build/cuda-check)
#   TORCH_CUDA_ARCH_LIST      architectures (default 9.0: one, to keep the build short)
#   MAX_JOBS                  compile jobs (default nproc)
#   MESHREC_CUDA_PYTEST_ARGS  the CPU test run (default: tests plugins/*/tests -m "not slow";
#                             "none" skips it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${MESHREC_CUDA_TORCH:-2.13.0}"
VENV="${MESHREC_CUDA_VENV:-$HOME/.cache/meshrec/cuda-venv-torch$TORCH_VERSION}"
WORK="${MESHREC_CUDA_WORKDIR:-$ROOT/build/cuda-check}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
started=$(date +%s)
step() { echo; echo "=== cuda_build_check: $* ($(( $(date +%s) - started ))s)"; }

step "virtual environment $VENV (torch $TORCH_VERSION, CUDA build)"
PY="$VENV/bin/python"
if ! "$PY" -c "import torch, sys; sys.exit(not (torch.__version__.split('+')[0] == '$TORCH_VERSION' and torch.version.cuda))" 2>/dev/null; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  # Straight from PyPI: the pip configuration of the CI machine points at a local CPU-only torch
  # wheel (torch==X matches X+cpu too, and the local label sorts higher), which must not win here.
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
fi
"$PY" -m pip install --quiet setuptools wheel ninja numpy scipy pluggy tqdm pillow pytest hypothesis \
  pytest-benchmark smplx
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
export PATH="$VENV/bin:$PATH"  # ninja

step "nvcc"
NVCC="${CUDA_HOME:+$CUDA_HOME/bin/nvcc}"
[ -x "${NVCC:-}" ] || NVCC="$(command -v nvcc || true)"
if [ -z "$NVCC" ]; then
  echo "cuda_build_check: nvcc not found; install the CUDA toolkit matching torch's CUDA" \
       "($("$PY" -c 'import torch; print(torch.version.cuda)')) and set CUDA_HOME" >&2
  exit 1
fi
"$NVCC" --version | tail -2
nvcc_major="$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
torch_major="$("$PY" -c 'import torch; print(torch.version.cuda.split(".")[0])')"
if [ "$nvcc_major" != "$torch_major" ]; then
  echo "cuda_build_check: nvcc is CUDA $nvcc_major but torch was built with CUDA $torch_major;" \
       "torch's extension build refuses a different major version. Point CUDA_HOME at a CUDA" \
       "$torch_major toolkit (the nvidia-cuda-nvcc wheel of that version is one)." >&2
  exit 1
fi

step "copy the tree to $WORK"
mkdir -p "$WORK"
(cd "$ROOT" && tar --exclude=./build --exclude=./.git --exclude='*.so' --exclude=./.ci-venv --exclude=./.whl \
   --exclude='*.egg-info' --exclude=__pycache__ -cf - .) | (cd "$WORK" && tar -xf -)

step "build and install (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"
build_started=$(date +%s)
rm -f "$WORK"/meshrec/_C*.so  # a stale library must not pass for a build
(cd "$WORK" && FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -v -e . 2>&1) |
  grep -E "^ +(meshrec|torch|python|cuda|TORCH_CUDA|CUDA_HOME|nvcc|MAX_JOBS|debug|openmp|sources) |error|Error|warning|Successfully" || true
"$PY" -c "import meshrec._C" || { echo "cuda_build_check: the build failed (rerun with pip -v in $WORK)" >&2; exit 1; }
echo "build time: $(( $(date +%s) - build_started ))s"
(cd "$WORK" && "$PY" -m pip install --quiet --no-build-isolation --no-deps $(for p in plugins/*/; do printf -- '-e %s ' "$p"; done))

step "the CUDA library without a GPU"
(cd "$WORK" && "$PY" - "$WORK") <<'PYEOF'
import sys
from pathlib import Path

import torch

import meshrec
from meshrec import _C, extension

work = Path(sys.argv[1]).resolve()
assert Path(_C.__file__).resolve().is_relative_to(work), f"meshrec._C loads from {_C.__file__}, not {work}"
report = meshrec.info()
print({key: report[key] for key in ("torch", "torch_cuda", "compiled_backends", "cuda_archs", "op_backend", "cuda_available")})
assert report["compiled_backends"] == ["cpu", "cuda"], report["compiled_backends"]
assert report["op_backend"] == "compiled" and not report["cuda_available"]
# Every meshrec op with a CPU kernel has a CUDA kernel too (bindings registered at load).
cpu = {n for n in torch._C._dispatch_get_registrations_for_dispatch_key("CPU") if n.startswith("meshrec::")}
cuda = {n for n in torch._C._dispatch_get_registrations_for_dispatch_key("CUDA") if n.startswith("meshrec::")}
# _-prefixed ops report on the build and the CPU instruction set; they have no CUDA counterpart.
missing = sorted(n for n in cpu - cuda if not n.split("::")[1].startswith("_"))
print(f"{len(cuda)} ops with CUDA kernels, {len(cpu)} with CPU kernels")
assert not missing, f"ops without a CUDA kernel: {missing}"
PYEOF
(cd "$WORK" && "$VENV/bin/meshrec" info)

PYTEST_ARGS="${MESHREC_CUDA_PYTEST_ARGS:-tests plugins/*/tests -m \"not slow\"}"
if [ "$PYTEST_ARGS" != none ]; then
  step "CPU test suite against the CUDA build: pytest $PYTEST_ARGS"
  (cd "$WORK" && eval "\"$PY\" -m pytest $PYTEST_ARGS -q -p no:cacheprovider")
fi

step "GPU script, dry run (tools/gpu_check.sh --dry-run)"
REPORT_DIR="$(dirname "$WORK")/cuda-check-report"
bash "$ROOT/tools/gpu_check.sh" --dry-run --skip-build --python "$PY" --workdir "$WORK" --out "$REPORT_DIR"
sed -n '1,/^## meshrec info/p' "$REPORT_DIR/gpu_check_report.md"

step "done"
