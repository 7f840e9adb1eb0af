"""Headless OpenGL for MuJoCo: pick `MUJOCO_GL` (egl, else osmesa) before mujoco is imported.

MuJoCo fixes its GL backend when `mujoco` is first imported, so every module that renders
imports `envs.gl` first. A backend the user set is kept; with none set we take the first whose
system library loads, and fail with the Debian package to install when neither does.
"""

from __future__ import annotations

import ctypes.util
import os

from infra.errors import UserError

# backend -> (shared library it needs, Debian package that ships it)
_BACKENDS = {"egl": ("EGL", "libegl1"), "osmesa": ("OSMesa", "libosmesa6")}


def choose_backend() -> str:
    """Set MUJOCO_GL to a backend whose library is present; return the backend used."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen if chosen in _BACKENDS else "")
        return chosen
    for backend, (library, _) in _BACKENDS.items():
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise UserError(
        "headless rendering needs EGL or OSMesa: install one with "
        "`apt-get install libegl1 libgl1-mesa-dri` or `apt-get install libosmesa6`, "
        "or set MUJOCO_GL yourself"
    )


BACKEND = choose_backend()
