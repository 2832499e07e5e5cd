"""Builds the Python package `burst` with CMake: the C++ library and the extension
burst._burst in a temporary build folder (never the project's build/), the pure-Python part
from python/burst. `pip install --no-build-isolation .` runs it (pyproject.toml).

Environment: BURST_PIP_BUILD_DIR (the build folder; default a folder under the system's
temporary directory named after this source tree, reused by later installs),
CMAKE_BUILD_PARALLEL_LEVEL (compile jobs; default all cores), BURST_CMAKE_ARGS (more
arguments for CMake's configure step, split on spaces)."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext
from setuptools.command.egg_info import egg_info

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get("BURST_PIP_BUILD_DIR") or os.path.join(
    tempfile.gettempdir(), "burst-pip-" + hashlib.sha256(ROOT.encode()).hexdigest()[:12])


def project_version():
    """The version of CMakeLists.txt's project(), which the library reports too."""
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        found = re.search(r"project\(burst VERSION (\d+\.\d+\.\d+)", f.read())
    if not found:
        raise SystemExit("setup.py: no `project(burst VERSION x.y.z)` in CMakeLists.txt")
    return found.group(1)


class Build(build):
    """setuptools' build folder (build/lib, build/bdist...) goes under BUILD_DIR, so pip
    leaves the project's CMake build folder `build/` alone."""

    def initialize_options(self):
        super().initialize_options()
        self.build_base = os.path.join(BUILD_DIR, "setuptools")


class EggInfo(egg_info):
    """The egg-info folder goes under BUILD_DIR too, not into the source tree."""

    def initialize_options(self):
        super().initialize_options()
        os.makedirs(BUILD_DIR, exist_ok=True)
        self.egg_base = os.path.relpath(BUILD_DIR, ROOT) if os.path.isabs(BUILD_DIR) else BUILD_DIR


class CMakeBuild(build_ext):
    """Configures the project with CMake (library and Python module only, for the running
    interpreter) and builds the extension target, then copies it where setuptools wants it."""

    def run(self):
        cmake_dir = os.path.join(BUILD_DIR, "cmake")
        configure = ["cmake", "-S", ROOT, "-B", cmake_dir, "-DCMAKE_BUILD_TYPE=Release", "-DBURST_BUILD_TESTS=OFF",
                     "-DBURST_BUILD_BENCH=OFF", "-DBURST_BUILD_PYTHON=ON", f"-DPython3_EXECUTABLE={sys.executable}"]
        if shutil.which("ninja") and not os.path.exists(os.path.join(cmake_dir, "Makefile")):
            configure += ["-G", "Ninja"]
        configure += os.environ.get("BURST_CMAKE_ARGS", "").split()
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        if shutil.which("cmake") is None:
            raise SystemExit("setup.py: cmake not found (apt-get install cmake, or scripts/install-deps.sh)")
        subprocess.run(configure, check=True)
        try:
            subprocess.run(["cmake", "--build", cmake_dir, "--target", "_burst", "-j", jobs], check=True)
        except subprocess.CalledProcessError:
            raise SystemExit(f"setup.py: building the extension failed (above). If CMake skipped the Python module, "
                             f"install pybind11-dev and python3-dev (scripts/install-deps.sh); the build folder is "
                             f"{cmake_dir}") from None
        built = os.path.join(cmake_dir, "python", "burst")
        for ext in self.extensions:
            name = ext.name.split(".")[-1]
            candidates = [f for f in os.listdir(built) if f.startswith(name + ".") and f.endswith(".so")]
            if len(candidates) != 1:
                raise SystemExit(f"setup.py: expected one {name}*.so in {built}, found {candidates}")
            target = self.get_ext_fullpath(ext.name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(built, candidates[0]), target)


setup(
    version=project_version(),
    packages=["burst"],
    package_dir={"burst": "python/burst"},
    ext_modules=[Extension("burst._burst", sources=[])],
    cmdclass={"build": Build, "egg_info": EggInfo, "build_ext": CMakeBuild},
    zip_safe=False,
)
