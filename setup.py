"""Build the Cython extensions.

Environment switches (read at build time):

- ``ENGINE_DEBUG=1``: bounds and wraparound checks on, invariant checks after every
  book change (``ENGINE_DEBUG`` C macro), line tracing, ``-O0 -g``.
- ``ENGINE_ANNOTATE=1``: write Cython's annotated HTML next to each ``.pyx``.
- ``ENGINE_ONLY=engine._core.book,feeds.x``: build only the named extensions (for
  fast iteration; a normal build compiles every ``.pyx``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent
DEBUG = os.environ.get("ENGINE_DEBUG") == "1"
ANNOTATE = os.environ.get("ENGINE_ANNOTATE") == "1"
ONLY = {name for name in os.environ.get("ENGINE_ONLY", "").split(",") if name}


def _module_name(pyx: Path) -> str:
    return ".".join(pyx.relative_to(ROOT).with_suffix("").parts)


def _extensions() -> list[Extension]:
    if DEBUG:
        cflags = ["-O0", "-g", "-Wall", "-Wno-unused-function"]
        macros = [("ENGINE_DEBUG", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    else:
        # -O3 without -march=native: the build must run on any x86-64/arm64 it is copied to.
        cflags = ["-O3", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
        macros = [("ENGINE_DEBUG", "0")]
    macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))
    exts = []
    for pyx in sorted(ROOT.glob("engine/**/*.pyx")) + sorted(ROOT.glob("feeds/**/*.pyx")):
        name = _module_name(pyx)
        if ONLY and name not in ONLY:
            continue
        exts.append(
            Extension(
                name,
                [str(pyx.relative_to(ROOT))],
                include_dirs=[np.get_include(), "engine/_core"],
                define_macros=macros,
                extra_compile_args=cflags,
            )
        )
    return exts


DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "cdivision": True,
    # Indices are ours on every hot path; inputs from outside are range-checked by hand.
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "linetrace": DEBUG,
    "profile": False,
}

setup(
    ext_modules=cythonize(
        _extensions(),
        compiler_directives=DIRECTIVES,
        annotate=ANNOTATE,
        nthreads=int(os.environ.get("ENGINE_BUILD_JOBS", "0")),
    ),
)
