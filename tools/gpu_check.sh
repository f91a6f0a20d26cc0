#!/usr/bin/env bash
# One script for a short GPU window: on a fresh GPU machine with this working tree, install what
# is missing, build meshrec with CUDA for the GPU present only, run the CUDA tests (tests/cpp via
# CMake + ctest, and the `cuda` parametrisations of tests/), run the GPU benchmarks
# (tools/gpu_bench.py), and write ONE report (pass/fail per test, timings, the device named)
# that can be pasted into benchmarks/RESULTS.md. Designed to finish within 8 minutes on an H100,
# the build included; every step has a time limit and the report is written whatever fails.
#
#   tools/gpu_check.sh [--out DIR]        on the GPU machine (report: DIR/gpu_check_report.md)
#   tools/gpu_check.sh --dry-run          anywhere: everything except what needs the device
#
# --dry-run builds (unless --skip-build, or when torch is CPU-only), lists the CUDA tests that
# would run instead of running them, and runs the benchmark script on the CPU at quick sizes.
# The tree is copied to a work folder first (default build/gpu-check/tree), so the checkout's own
# build (meshrec/_C.so) is never touched. See docs/cuda.md.
#
# Options:
#   --out DIR        report folder (default: $OUT if set, else build/gpu-check)
#   --python PY      interpreter with (or to get) a CUDA torch (default: python3)
#   --wheels DIR     install missing packages from these wheels, offline (default: .whl if present)
#   --arch LIST      TORCH_CUDA_ARCH_LIST (default: the visible GPU's compute capability; 9.0 in a
#                    dry run without a GPU)
#   --jobs N         parallel compile jobs (default: nproc)
#   --workdir DIR    where the tree is copied and built (default: build/gpu-check/tree)
#   --deadline S     wall-clock budget in seconds for the whole run (default 450; steps also have
#                    their own limits, sized for an H100 machine, except in a dry run)
#   --skip-build     use the work folder's existing build
#   --skip-bench     no benchmarks
#   --torch SPEC     what to pip-install when the interpreter has no CUDA torch (default: torch)
#   --no-install     install nothing: report what is missing and go on without it
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
OUT_DIR="${OUT:-$ROOT/build/gpu-check}"
PY="${PYTHON:-python3}"
WHEELS=""
[ -d "$ROOT/.whl" ] && WHEELS="$ROOT/.whl"
ARCH="${TORCH_CUDA_ARCH_LIST:-}"
JOBS="$(nproc 2>/dev/null || echo 4)"
WORK="$ROOT/build/gpu-check/tree"
DEADLINE=450
SKIP_BUILD=0
SKIP_BENCH=0
TORCH_SPEC="torch"
NO_INSTALL=0

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    --python) PY="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --arch) ARCH="$2"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    --workdir) WORK="$2"; shift ;;
    --deadline) DEADLINE="$2"; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --torch) TORCH_SPEC="$2"; shift ;;
    --no-install) NO_INSTALL=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

mkdir -p "$OUT_DIR" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
REPORT="$OUT_DIR/gpu_check_report.md"
LOG="$OUT_DIR/gpu_check.log"
JUNIT="$OUT_DIR/gpu_check_pytest.xml"
BENCH_JSON="$OUT_DIR/gpu_check_bench.json"
SECTIONS="$(mktemp -d)"
: >"$LOG"
STARTED=$(date +%s)
STEPS=()        # "name|status|seconds|note"
FAILED=0

elapsed() { echo $(( $(date +%s) - STARTED )); }
remaining() { echo $(( DEADLINE - $(elapsed) )); }
log() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$LOG" >&2; }
record() {  # name status seconds note
  STEPS+=("$1|$2|$3|$4")
  [ "$2" = "FAIL" ] && FAILED=1
  log "$1: $2 (${3}s) $4"
}
# run_step NAME CAP_SECONDS COMMAND...: runs with a limit of min(CAP, time left), output to the log.
run_step() {
  local name="$1" cap="$2"; shift 2
  local left; left=$(remaining)
  if [ "$left" -lt 15 ]; then record "$name" SKIP 0 "deadline (${DEADLINE}s) reached"; return 3; fi
  # The caps fit an H100 machine; a dry run on a small build machine gets the whole budget.
  { [ "$cap" -gt "$left" ] || [ $DRY_RUN = 1 ]; } && cap="$left"
  local t0; t0=$(date +%s)
  echo "===== $name: $* (limit ${cap}s)" >>"$LOG"
  # bash -c so that the command may be one of the exported functions below; timeout signals the
  # whole process group (ninja, nvcc, pytest workers) when the limit is hit.
  timeout --kill-after=10 "$cap" bash -c '"$@"' run_step "$@" >>"$LOG" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then record "$name" PASS "$dt" ""
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" FAIL "$dt" "timed out after ${cap}s"
  else record "$name" FAIL "$dt" "exit status $rc (see gpu_check.log)"; fi
  return $rc
}

write_report() {
  {
    echo "# meshrec GPU check$([ $DRY_RUN = 1 ] && echo ' (dry run: no device work)')"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(hostname); total: $(elapsed) s (budget ${DEADLINE} s)"
    echo "- device: ${GPU_NAME:-none}${GPU_DRIVER:+ (driver $GPU_DRIVER, compute capability $GPU_CAP)}"
    echo "- python: ${PY_VERSION:-?}; torch: ${TORCH_VERSION:-?} (CUDA ${TORCH_CUDA:-none}); nvcc: ${NVCC_VERSION:-not found}"
    echo "- build: TORCH_CUDA_ARCH_LIST=${ARCH:-?}, MAX_JOBS=$JOBS, work folder $WORK"
    echo
    echo "## Steps"
    echo
    echo "| step | result | seconds | note |"
    echo "|---|---|---:|---|"
    local entry
    for entry in "${STEPS[@]}"; do
      IFS='|' read -r name status seconds note <<<"$entry"
      echo "| $name | $status | $seconds | $note |"
    done
    echo
    local section
    for section in "$SECTIONS"/*.md; do
      [ -f "$section" ] && { cat "$section"; echo; }
    done
    echo "Full output: gpu_check.log beside this file."
  } >"$REPORT"
}
trap 'write_report; rm -rf "$SECTIONS"' EXIT

log "mode: $([ $DRY_RUN = 1 ] && echo dry run || echo GPU run); report: $REPORT"

# ---- 1. the machine ---------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  IFS=',' read -r GPU_NAME GPU_DRIVER GPU_CAP < <(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -1)
  GPU_NAME="$(echo "$GPU_NAME" | xargs)"; GPU_DRIVER="$(echo "$GPU_DRIVER" | xargs)"; GPU_CAP="$(echo "$GPU_CAP" | xargs)"
  nvidia-smi >>"$LOG" 2>&1
fi
if [ $DRY_RUN = 0 ] && [ -z "${GPU_NAME:-}" ]; then
  record "find the GPU" FAIL 0 "nvidia-smi sees no GPU; use --dry-run on a machine without one"
  exit 1
fi
NVCC="$(command -v nvcc || true)"
[ -z "$NVCC" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && NVCC="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
[ -n "$NVCC" ] && NVCC_VERSION="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"

# ---- 2. Python packages -------------------------------------------------------------------------
torch_probe() { "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda or "none")' 2>/dev/null; }
pip_install() {  # offline from --wheels when given, else the configured index
  if [ -n "$WHEELS" ]; then "$PY" -m pip install --no-index --find-links "$WHEELS" "$@"
  else "$PY" -m pip install --retries 1 --timeout 15 "$@"; fi  # fail fast where no index is reachable
}
export PY WHEELS
export -f pip_install
t0=$(date +%s)
if ! command -v "$PY" >/dev/null 2>&1; then record "python" FAIL 0 "$PY not found"; exit 1; fi
read -r TORCH_VERSION TORCH_CUDA < <(torch_probe || echo "- none")
if [ "${TORCH_CUDA:-none}" = none ]; then
  if [ $DRY_RUN = 1 ]; then
    record "CUDA torch" SKIP 0 "$PY has torch ${TORCH_VERSION} without CUDA: a GPU run would pip-install '$TORCH_SPEC' into a venv"
  elif [ $NO_INSTALL = 1 ]; then
    record "CUDA torch" FAIL 0 "$PY has torch ${TORCH_VERSION} without CUDA (--no-install: going on without)"
  else
    VENV="$(dirname "$WORK")/venv"
    log "no CUDA torch in $PY: installing $TORCH_SPEC into $VENV"
    # PIP_FIND_LINKS/PIP_CONFIG_FILE cleared: a machine's local CPU-only torch wheels must not win.
    if run_step "install CUDA torch" 600 bash -c "'$PY' -m venv '$VENV' && PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= '$VENV/bin/python' -m pip install -q $TORCH_SPEC"; then
      PY="$VENV/bin/python"
      read -r TORCH_VERSION TORCH_CUDA < <(torch_probe || echo "- none")
    else
      exit 1
    fi
  fi
fi
PY_VERSION="$("$PY" -c 'import platform; print(platform.python_version())')"
# module:distribution pairs, probed in one interpreter start
read -r -a missing < <("$PY" - <<'PYEOF'
import importlib.util
wanted = {"numpy": "numpy", "scipy": "scipy", "pluggy": "pluggy", "tqdm": "tqdm", "PIL": "pillow",
          "pytest": "pytest", "hypothesis": "hypothesis", "smplx": "smplx", "setuptools": "setuptools",
          "wheel": "wheel"}
print(" ".join(dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None))
PYEOF
)
command -v ninja >/dev/null 2>&1 || "$PY" -c "import ninja" 2>/dev/null || missing+=(ninja)
if [ ${#missing[@]} -eq 0 ]; then
  record "Python packages" PASS $(( $(date +%s) - t0 )) "all present"
elif [ $DRY_RUN = 1 ]; then
  record "Python packages" SKIP $(( $(date +%s) - t0 )) "missing: ${missing[*]} (a GPU run installs them${WHEELS:+ from $WHEELS})"
elif [ $NO_INSTALL = 1 ]; then
  record "Python packages" FAIL $(( $(date +%s) - t0 )) "missing: ${missing[*]} (--no-install)"
else
  # One at a time, so that one missing wheel does not block the others. smplx only feeds the SMPL
  # comparison: without it the benchmarks compare with meshrec's own plain-PyTorch path.
  for package in "${missing[@]}"; do
    run_step "install $package" 120 pip_install -q "$package" || log "continuing without $package"
  done
fi
# torch's ninja build wants the ninja binary: the pip package puts one beside the interpreter.
export PATH="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')"):$PATH"

# ---- 3. the work tree -----------------------------------------------------------------------------
t0=$(date +%s)
mkdir -p "$WORK"
# tar keeps modification times, so an unchanged source does not rebuild on a rerun.
(cd "$ROOT" && tar --exclude=./build --exclude=./.git --exclude='*.so' --exclude=./.ci-venv --exclude=./.whl \
   --exclude='*.egg-info' --exclude=__pycache__ -cf - .) | (cd "$WORK" && tar -xf -)
record "copy the tree" $([ -f "$WORK/setup.py" ] && echo PASS || echo FAIL) $(( $(date +%s) - t0 )) "$WORK"

if [ -z "$ARCH" ]; then
  if [ -n "${GPU_CAP:-}" ]; then ARCH="$GPU_CAP"
  else ARCH="$("$PY" -c 'import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0); print(f"{c[0]}.{c[1]}")' 2>/dev/null || echo 9.0)"; fi
fi
export TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS"
[ -n "${NVCC:-}" ] && [ -z "${CUDA_HOME:-}" ] && export CUDA_HOME="$("$NVCC" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1 | xargs -r realpath)"

# ---- 4. build: the Python extension and the CMake kernel tests, side by side ----------------------
CMAKE_BUILD="$WORK/build/cmake-gpu"
cmake_tests() {
  # Torch is left out of this build: its CUDA config wants every CUDA math library, and the
  # kernel tests need none (the ops library is built by setup.py). Its own log, appended to the
  # main one afterwards, so that the two parallel builds' output does not interleave.
  { cmake -S "$WORK" -B "$CMAKE_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON \
          ${NVCC:+-DCMAKE_CUDA_COMPILER="$NVCC"} &&
    cmake --build "$CMAKE_BUILD" -j "$JOBS"; } >"$SECTIONS/cmake.log" 2>&1
}
extension_build() { (cd "$WORK" && FORCE_CUDA=1 "$PY" setup.py build_ext --inplace); }
export WORK PY NVCC JOBS CMAKE_BUILD SECTIONS
export -f cmake_tests extension_build
if [ $SKIP_BUILD = 1 ]; then
  record "build" SKIP 0 "--skip-build"
elif [ "${TORCH_CUDA:-none}" = none ]; then
  record "build" SKIP 0 "torch has no CUDA (dry run)"
elif [ -z "${NVCC:-}" ]; then
  record "build" FAIL 0 "nvcc not found (install the CUDA ${TORCH_CUDA} toolkit or the nvidia-cuda-nvcc wheel, set CUDA_HOME)"
else
  build_started=$(date +%s)
  run_step "CMake kernel tests build" 420 cmake_tests &
  cmake_pid=$!
  run_step "build meshrec._C (CUDA ${ARCH})" 420 extension_build
  wait $cmake_pid
  { echo "===== CMake kernel tests build output"; cat "$SECTIONS/cmake.log"; } >>"$LOG"
  # the background step recorded into its own subshell: read its result back from the log
  line="$(grep -a "CMake kernel tests build: " "$LOG" | tail -1)"
  case "$line" in
    *": PASS"*) record "CMake kernel tests build (parallel)" PASS "-" "" ;;
    *) record "CMake kernel tests build (parallel)" FAIL "-" "${line##*: }" ;;
  esac
  record "build wall time" INFO $(( $(date +%s) - build_started )) "both builds, $JOBS jobs"
  grep -a -A14 "^meshrec build configuration:" "$LOG" | head -15 | sed 's/^/    /' >"$SECTIONS/1-build.md.tmp"
  { echo "## Build configuration"; echo; cat "$SECTIONS/1-build.md.tmp"; } >"$SECTIONS/1-build.md"
  rm -f "$SECTIONS/1-build.md.tmp"
fi

# From here on, meshrec is the work folder's copy (its fresh _C.so), whatever else is installed.
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
run_meshrec() { (cd "$WORK" && "$PY" "$@"); }
export PYTHONPATH
export -f run_meshrec
where="$(run_meshrec -c 'import meshrec; print(meshrec.__file__)' 2>>"$LOG")"
case "$where" in
  "$WORK"/*) ;;
  *) record "import meshrec" FAIL 0 "meshrec resolves to '$where', not the work folder"; exit 1 ;;
esac
meshrec_info() {
  run_meshrec - <<'PYEOF' | tee "$SECTIONS/info.txt"
import sys
from meshrec import cli, extension
cli.main(["info"])
if extension.has_compiled_ops():
    from meshrec import _C
    print(f"library            {_C.__file__}")
PYEOF
}
export SECTIONS
export -f meshrec_info
run_step "meshrec info" 90 meshrec_info
{ echo "## meshrec info"; echo; grep -v '^plugins' "$SECTIONS/info.txt" | sed 's/^/    /'; } >"$SECTIONS/2-info.md"
library="$(sed -n 's/^library *//p' "$SECTIONS/info.txt")"
if [ $SKIP_BUILD = 0 ] && [ "${TORCH_CUDA:-none}" != none ]; then
  # the library in use must be the one just built, with its CUDA kernels
  case "$library" in
    "$WORK"/*) grep -q "^compiled backends.*cuda" "$SECTIONS/info.txt" &&
                 record "CUDA backend compiled in" PASS 0 "$library" ||
                 record "CUDA backend compiled in" FAIL 0 "meshrec info lists no cuda backend" ;;
    *) record "CUDA backend compiled in" FAIL 0 "the library in use is '${library:-none}', not the work folder's" ;;
  esac
fi

# ---- 5. CUDA tests --------------------------------------------------------------------------------
# The tests' fixtures come from meshrec's pytest plugin, which pytest loads through the meshrec
# distribution's entry point. Here meshrec is the work folder on PYTHONPATH, installed nowhere
# (the device machines' case): then name the plugin explicitly.
FIXTURES=()
if ! run_meshrec -c "import sys; from importlib.metadata import entry_points
sys.exit(not any(ep.value == 'meshrec.testing.fixtures' for ep in entry_points(group='pytest11')))" 2>>"$LOG"; then
  FIXTURES=(-p meshrec.testing.fixtures)
fi
# every device parametrisation; docs/cuda.md's code-block test matches "cuda" by its name only
SELECT="cuda and not test_code_blocks_run_as_written"
PYTEST=(-m pytest tests -k "$SELECT" -p no:cacheprovider "${FIXTURES[@]}" -q -rfEs -o addopts= --junitxml="$JUNIT")
if [ $DRY_RUN = 1 ]; then
  run_step "CUDA tests (collected, not run)" 240 run_meshrec -m pytest tests -k "$SELECT" -p no:cacheprovider "${FIXTURES[@]}" \
    -q --collect-only -o addopts=
  count="$(grep -a -E '^[0-9]+(/[0-9]+)? tests? (collected|selected)' "$LOG" | tail -1)"
  { echo "## CUDA tests planned"; echo; echo "pytest -k cuda: ${count:-see log}"; } >"$SECTIONS/3-tests.md"
  if [ -d "$CMAKE_BUILD" ]; then
    run_step "ctest (listed, not run)" 60 ctest --test-dir "$CMAKE_BUILD" -N
    { echo; echo "ctest: $(grep -a -E '^Total Tests:' "$LOG" | tail -1)"; grep -a -E '^ +Test +#' "$LOG" | sed 's/^ */    /'; } \
      >>"$SECTIONS/3-tests.md"
  else
    record "ctest (listed, not run)" SKIP 0 "no CMake build"
  fi
else
  if [ -d "$CMAKE_BUILD" ]; then
    run_step "ctest (tests/cpp, CUDA kernels)" 120 ctest --test-dir "$CMAKE_BUILD" --output-on-failure
  else
    record "ctest (tests/cpp, CUDA kernels)" FAIL 0 "no CMake build"
  fi
  run_step "pytest -k cuda" 240 run_meshrec "${PYTEST[@]}"
  {
    echo "## ctest"; echo
    grep -a -E "^ *[0-9]+/[0-9]+ Test +#" "$LOG" | sed 's/^ */    /'
    echo
    echo "## CUDA tests (pytest -k cuda)"; echo
    "$PY" - "$JUNIT" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as error:
    print(f"no JUnit report ({error})"); sys.exit()
counts = {"passed": 0, "failed": 0, "skipped": 0}
rows = []
for case in root.iter("testcase"):
    status = "passed"
    for child in case:
        if child.tag in ("failure", "error"): status = "failed"
        elif child.tag == "skipped": status = "skipped"
    counts[status] += 1
    rows.append(f"| {case.get('classname', '').removeprefix('tests.')}::{case.get('name')} | {status} | {float(case.get('time', 0)):.2f} |")
print(", ".join(f"{v} {k}" for k, v in counts.items()))
print()
print("| test | result | seconds |\n|---|---|---:|")
print("\n".join(rows))
PYEOF
  } >"$SECTIONS/3-tests.md"
fi

# ---- 6. benchmarks --------------------------------------------------------------------------------
if [ $SKIP_BENCH = 1 ]; then
  record "benchmarks" SKIP 0 "--skip-bench"
else
  if [ $DRY_RUN = 1 ]; then BENCH=(--device cpu --quick); else BENCH=(--device cuda); fi
  run_step "benchmarks ($([ $DRY_RUN = 1 ] && echo 'CPU, quick sizes' || echo GPU))" 240 \
    run_meshrec "$WORK/tools/gpu_bench.py" "${BENCH[@]}" --markdown "$SECTIONS/4-bench.md" --json "$BENCH_JSON"
fi

record "total" INFO "$(elapsed)" "budget ${DEADLINE}s"
exit $FAILED
