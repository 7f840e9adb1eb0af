"""The square's symmetries, for tasks seen from straight above whose scene and dynamics they leave
unchanged (PushT: a square arena, an orthographic top camera, a headlight, a T that is its own
mirror image): quarter turns and mirror images, the dihedral group D4. A demonstration turned by
one of them is a demonstration of the same task, so training on turned copies gives a policy eight
times the demonstrations' variety (symmetry as data augmentation; Wang et al. 2024, Equivariant
Diffusion Policy, build it into the network instead).

Convention: image columns run along world +x and rows along world -y, as the top camera sees.
Element (k, mirror): mirror x -> -x first (if mirror), then turn k quarter turns counterclockwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ELEMENTS = tuple((k, mirror) for mirror in (False, True) for k in range(4))  # ELEMENTS[0] is the identity


@dataclass(frozen=True)
class SquareSymmetry:
    """Which entries of a task's proprio and actions are planar (x, y) vectors, turned with the world."""

    proprio: tuple[tuple[int, int], ...]
    actions: tuple[tuple[int, int], ...]


def matrix(k: int, mirror: bool) -> np.ndarray:
    """The element's 2 x 2 map of world (x, y) vectors."""
    c, s = np.round(np.cos(k * np.pi / 2)), np.round(np.sin(k * np.pi / 2))
    return np.array([[c, -s], [s, c]]) @ (np.diag([-1.0, 1.0]) if mirror else np.eye(2))


def turn_images(images: np.ndarray, k: int, mirror: bool) -> np.ndarray:
    """Images [..., H, W, C] as the world turned by the element looks from the top camera."""
    if mirror:
        images = images[..., ::-1, :]
    return np.ascontiguousarray(np.rot90(images, k, axes=(-3, -2)))


def turn_vectors(values: np.ndarray, pairs: tuple[tuple[int, int], ...], k: int, mirror: bool) -> np.ndarray:
    """values [..., D] with each (i, j) of `pairs` an (x, y) vector turned by the element; the rest unchanged."""
    values = np.asarray(values)
    out, m = values.copy(), matrix(k, mirror).astype(values.dtype)
    for i, j in pairs:
        out[..., [i, j]] = values[..., [i, j]] @ m.T
    return out
