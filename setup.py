"""Build script: installs `arcdae_fast`, maps the top-level `kernels/` folder (Triton kernels)
to `arcdae_fast.kernels`, and builds the C++/CUDA op library `arcdae_fast._C` from csrc/.

- The CPU extension (csrc/ops.cpp + csrc/cpu/*.cpp, g++; SIMD clones picked at load time)
  is always built.
- The CUDA kernels (csrc/cuda/*.cu + csrc/cuda/bindings.cpp) are added when torch has CUDA
  and nvcc is found, unless ARCDAE_FAST_SKIP_CUDA_BUILD=1.
- ARCDAE_FAST_CUDA_ARCHS (e.g. "9.0" or "8.0;9.0") picks the GPU architectures; default:
  the visible GPU's, else 8.0 and 9.0.
- MAX_JOBS defaults to what the machine fits (cores, and ~3 GB of memory per nvcc job).
- ARCDAE_FAST_SKIP_EXT=1 skips the extension entirely (pure-Python install; the reference
  and Triton backends still work).
What was built and why not is written to arcdae_fast/_build_info.json, which
`python -m arcdae_fast.info` reports.
"""

import glob
import json
import os
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
packages = find_packages(include=["arcdae_fast", "arcdae_fast.*"]) + ["arcdae_fast.kernels"]
build_info = {"cpu": False, "cuda": False, "why_no_cpu": "", "why_no_cuda": ""}


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def _default_jobs() -> int:
    cores = os.cpu_count() or 1
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 8.0
    return max(1, min(cores, int(mem_gb // 3)))


def _extensions():
    if _flag("ARCDAE_FAST_SKIP_EXT"):
        build_info["why_no_cpu"] = build_info["why_no_cuda"] = "ARCDAE_FAST_SKIP_EXT=1 at install"
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    os.environ.setdefault("MAX_JOBS", str(_default_jobs()))
    # hot CPU loops are cloned for AVX-512 / AVX2 / x86-64 at build and picked at load time
    # (csrc/cpu/simd.h); no -march flag, so the library runs on any x86-64 CPU
    # -fopenmp: at::parallel_for is inline OpenMP code; without the flag it runs serially.
    # The library then needs libgomp.so.1, which resolves to the copy torch already loaded.
    cxx = ["-O3", "-Wno-psabi", "-fopenmp"]  # the C++ standard: torch's default
    link = ["-fopenmp"]
    sources = ["csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cuda_sources = [*sorted(glob.glob("csrc/cuda/*.cu")), "csrc/cuda/bindings.cpp"]
    if _flag("ARCDAE_FAST_SKIP_CUDA_BUILD"):
        build_info["why_no_cuda"] = "ARCDAE_FAST_SKIP_CUDA_BUILD=1 at install"
    elif torch.version.cuda is None:
        build_info["why_no_cuda"] = f"torch {torch.__version__} was built without CUDA"
    elif CUDA_HOME is None:
        build_info["why_no_cuda"] = "nvcc / CUDA_HOME not found at install"
    if build_info["why_no_cuda"]:
        ext = CppExtension(
            "arcdae_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    else:
        archs = os.environ.get("ARCDAE_FAST_CUDA_ARCHS")
        if archs is None and torch.cuda.is_available():
            archs = "{}.{}".format(*torch.cuda.get_device_capability())
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs or "8.0;9.0"
        ext = CUDAExtension(
            "arcdae_fast._C",
            sources + cuda_sources,
            define_macros=[("ARCDAE_FAST_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]},
            extra_link_args=link,
        )
        build_info["cuda"] = True
        build_info["cuda_archs"] = os.environ["TORCH_CUDA_ARCH_LIST"]
    build_info["cpu"] = True
    build_info["torch"] = torch.__version__
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()
(ROOT / "arcdae_fast" / "_build_info.json").write_text(json.dumps(build_info, indent=1) + "\n")

setup(
    packages=packages,
    package_dir={"arcdae_fast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
