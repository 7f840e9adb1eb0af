"""File helpers for writes that must never leave a damaged file behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def fsync(path: Path) -> None:
    """Flush a written file to disk, before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary name, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    fsync(tmp)
    os.replace(tmp, path)


def write_json(path: Path, value) -> None:
    """Write JSON through a temporary name, so readers never see half a file."""
    write_text(path, json.dumps(value, indent=1))


def replace_folder(source: Path, target: Path) -> None:
    """Make `target` a copy of the folder `source`: copied and flushed under a temporary name first,
    so a failed copy leaves the old `target` whole, then swapped in with renames (a swap cut short
    between its two renames is completed from `.target.old` by the next call)."""
    source, target = Path(source), Path(target)
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, tmp)
    for path in tmp.rglob("*"):
        if path.is_file():
            fsync(path)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
