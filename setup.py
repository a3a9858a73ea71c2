"""Build script: installs `arcdae_fast` and maps the top-level `kernels/` folder (Triton
kernels only) to the subpackage `arcdae_fast.kernels`."""

from setuptools import find_packages, setup

packages = find_packages(include=["arcdae_fast", "arcdae_fast.*"]) + ["arcdae_fast.kernels"]

setup(
    packages=packages,
    package_dir={"arcdae_fast.kernels": "kernels"},
)
