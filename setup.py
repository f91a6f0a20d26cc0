"""Build of meshrec's compiled ops library, ``meshrec._C``.

Install with ``pip install --no-build-isolation .``: the library links against the torch that is
already installed. With build isolation pip would build against whatever torch it downloads into
a temporary environment (on a CPU-only machine, the several-GB CUDA build) and the result would
not load with the torch you run.

Environment switches (the resolved configuration is printed at the start of the build):
  FORCE_CUDA=1           build the CUDA kernels even if no GPU is visible (needs a CUDA torch and nvcc)
  TORCH_CUDA_ARCH_LIST   CUDA architectures, e.g. "8.0;9.0+PTX" (default: visible GPUs, else 8.0;9.0+PTX)
  CUDA_HOME              the CUDA toolkit (default: the installation nvcc on PATH reports)
  MAX_JOBS               parallel compile jobs (torch's ninja build; default: all cores)
  MESHREC_DEBUG=1        -O0 -g
See docs/cuda.md for building against a CUDA torch on a machine without a GPU.
The compiled sources are listed once, in csrc/sources.txt, which CMakeLists.txt reads too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def read_version() -> str:
    namespace: dict[str, str] = {}
    exec((ROOT / "meshrec" / "_version.py").read_text(), namespace)
    return namespace["__version__"]


def read_sources() -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"python": [], "core": [], "cuda": [], "cuda_binding": []}
    for number, line in enumerate((ROOT / "csrc" / "sources.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, path = line.split()
        if kind not in kinds:
            raise SystemExit(f"csrc/sources.txt:{number}: unknown kind {kind!r}")
        kinds[kind].append(path)
    return kinds


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").is_file():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_report(nvcc: str) -> tuple[str | None, str]:
    """(installation root, release) as nvcc itself reports them. torch's build helpers guess the
    root as dirname(dirname(which nvcc)), which is wrong where nvcc on PATH is a wrapper script
    or a link (e.g. /usr/local/bin/nvcc exec-ing /usr/local/cuda-13.0/bin/nvcc): the headers
    and libcudart are then not found."""
    root, release = None, "?"
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None, release
    for line in (dry.stdout + dry.stderr).splitlines():
        if line.startswith("#$ TOP="):
            root = str(Path(line.split("=", 1)[1].strip()).resolve())
    for word in version.stdout.replace(",", " ").split():
        if word.startswith("V") and word[1:2].isdigit():
            release = word[1:]
    return root, release


def resolve_cuda_home(nvcc: str | None) -> tuple[str | None, str]:
    """Sets CUDA_HOME (read by torch.utils.cpp_extension at import) when the user has not.
    Returns (CUDA_HOME, nvcc release)."""
    if nvcc is None:
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"), "-"
    root, release = nvcc_report(nvcc)
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and root is not None:
        os.environ["CUDA_HOME"] = root
    return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"), release


def resolve_cuda(torch) -> tuple[bool, str, str]:
    """Returns (build CUDA?, reason, arch list)."""
    nvcc = find_nvcc()
    torch_has_cuda = torch.version.cuda is not None
    if env_flag("FORCE_CUDA"):
        if not torch_has_cuda:
            raise SystemExit(
                "meshrec: FORCE_CUDA=1 but the installed torch is a CPU-only build "
                f"({torch.__version__}), which lacks the CUDA headers the bindings need. "
                "Install a CUDA build of torch, or unset FORCE_CUDA."
            )
        if nvcc is None:
            raise SystemExit(
                "meshrec: FORCE_CUDA=1 but nvcc was found neither in $CUDA_HOME/bin nor on PATH. "
                f"Install the CUDA {torch.version.cuda} compiler (the toolkit, or the "
                "nvidia-cuda-nvcc wheel of that version) and set CUDA_HOME, or unset FORCE_CUDA."
            )
        use_cuda, reason = True, "FORCE_CUDA=1"
    elif not torch_has_cuda:
        use_cuda, reason = False, f"torch {torch.__version__} is a CPU-only build"
    elif nvcc is None:
        use_cuda, reason = False, "nvcc not found on PATH"
    else:
        use_cuda, reason = True, f"torch has CUDA {torch.version.cuda} and nvcc is {nvcc}"
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if use_cuda and not archs:
        if torch.cuda.is_available():
            capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            archs = ";".join(f"{major}.{minor}" for major, minor in capabilities)
        else:
            archs = DEFAULT_CUDA_ARCHS
        # torch's BuildExtension reads the same variable, so what we print is what it compiles.
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return use_cuda, reason, archs if use_cuda else ""


def openmp_flags(torch) -> list[str]:
    """-fopenmp when torch runs its intra-op threads on OpenMP (Linux wheels do). ATen's
    at::parallel_for is a header template that runs serially unless the extension itself is
    compiled with OpenMP; the OpenMP runtime torch bundles (libgomp.so.1) is then shared."""
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


def extension_modules() -> tuple[list, dict]:
    import torch

    sources = read_sources()
    use_cuda, reason, archs = resolve_cuda(torch)
    cuda_home, nvcc_release = resolve_cuda_home(find_nvcc()) if use_cuda else (None, "-")
    # After resolve_cuda_home: cpp_extension reads CUDA_HOME once, when it is imported.
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    debug = env_flag("MESHREC_DEBUG")
    version = read_version()

    optimisation = ["-O0", "-g"] if debug else ["-O3"]
    openmp = openmp_flags(torch)
    macros = [("MESHREC_VERSION", f'"{version}"')]
    files = sources["python"] + sources["core"]
    if use_cuda:
        files += sources["cuda"] + sources["cuda_binding"]
        macros += [("MESHREC_WITH_CUDA", None), ("MESHREC_CUDA_ARCHS", f'"{archs}"')]

    print("meshrec build configuration:")
    for key, value in [
        ("meshrec", version),
        ("torch", torch.__version__),
        ("python", sys.version.split()[0]),
        ("cuda", f"{'yes' if use_cuda else 'no'} ({reason})"),
        ("TORCH_CUDA_ARCH_LIST", archs or "-"),
        *([("CUDA_HOME", cuda_home or "-"), ("nvcc", nvcc_release)] if use_cuda else []),
        *([("MAX_JOBS", os.environ["MAX_JOBS"])] if os.environ.get("MAX_JOBS") else []),
        ("debug", debug),
        ("openmp", "yes" if openmp else "no (at::parallel_for runs serially)"),
        ("sources", len(files)),
    ]:
        print(f"  {key:22s} {value}")

    extension_class = CUDAExtension if use_cuda else CppExtension
    extension = extension_class(
        name="meshrec._C",
        sources=files,
        include_dirs=[str(ROOT / "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": optimisation + openmp, "nvcc": optimisation + ["-lineinfo"]},
        extra_link_args=openmp,
    )
    return [extension], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


if __name__ == "__main__":
    ext_modules, cmdclass = extension_modules()
    setup(
        packages=find_packages(include=["meshrec", "meshrec.*"]),
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
