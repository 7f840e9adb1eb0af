"""Headless GL backend selection."""

import pytest

from envs import UserError, gl


def test_keeps_a_backend_the_user_set(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert gl.choose_backend() == "osmesa"


def test_picks_egl_when_present(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(gl.ctypes.util, "find_library", lambda name: "libEGL.so.1" if name == "EGL" else None)
    assert gl.choose_backend() == "egl"


def test_names_the_package_to_install_when_nothing_renders(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(gl.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(UserError, match="apt-get install libegl1"):
        gl.choose_backend()
