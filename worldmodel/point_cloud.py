"""Depth images as point clouds, the input of the 3D-JEPA objective (3D-JEPA, Hu et al. 2024:
masked prediction of point-cloud regions from visible ones, in the latent space of an EMA
target). MuJoCo renders the observation camera's depth for free; unprojected with the camera's
intrinsics, each pixel becomes a 3-D point, and the frame an organised point cloud (a point map
[H, W, 3]) whose patches are regions of the cloud. The cube's height and the block's outline are
then geometry, not a few coloured pixels. The encoder and masks are the image ones, run on the
point map's three channels: 3D-JEPA groups unorganised points by farthest-point sampling instead.
"""

from __future__ import annotations

import numpy as np

from envs.dataset import read_rows
from infra.errors import UserError


def unproject(depth: np.ndarray, camera: dict) -> np.ndarray:
    """Depth [..., H, W] (metres along the optical axis) -> points [..., H, W, 3] in the camera's
    frame (x right, y down, z forward). `camera`: {"orthographic": bool, "focal": f, "centre": c, ...},
    f in pixels per metre (orthographic) or pixels (perspective), c the principal point in pixels
    (pixel index coordinates: (W - 1) / 2 for a centred camera)."""
    h, w = depth.shape[-2:]
    v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    scale = np.float32(1.0) if camera["orthographic"] else depth  # a perspective ray spreads with its depth
    x = (u - camera["centre"]) / camera["focal"] * scale
    y = (v - camera["centre"]) / camera["focal"] * scale
    return np.stack(np.broadcast_arrays(x, y, depth), -1).astype(np.float32)


class PointMaps:
    """Standardised point maps of a dataset's depth images, read like its frames:
    `maps[index]` -> float32 [*index.shape, H, W, 3]. Depth beyond the farthest surface of the
    fitted images (the far plane, where nothing was hit) is set to that surface."""

    def __init__(self, dataset, stats: dict | None = None):
        if dataset.depth is None:
            raise UserError(f"{dataset.path} holds no depth images: collect it with `jepa collect --depth`")
        self.depth, self.camera = dataset.depth, dataset.depth_camera
        self.stats = stats

    def fit(self, index: np.ndarray) -> dict:
        """{"far", "mean", "std"} from the frames at `index`, kept and returned."""
        depth = self.depth[np.sort(index)]
        hit = depth < 0.99 * self.camera["far"]  # the rest lies on the far clipping plane
        far = float(depth[hit].max()) if hit.any() else float(depth.max())
        self.stats = {"far": far}
        points = self[np.sort(index)]
        self.stats |= {"mean": points.reshape(-1, 3).mean(0).tolist(), "std": (points.reshape(-1, 3).std(0) + 1e-6).tolist()}
        return self.stats

    def __getitem__(self, index) -> np.ndarray:
        points = unproject(np.minimum(read_rows(self.depth, index), self.stats["far"]), self.camera)
        if "mean" in self.stats:
            points = (points - np.float32(self.stats["mean"])) / np.float32(self.stats["std"])
        return points
