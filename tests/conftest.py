"""Shared fixtures and helpers: tests run on CPU, headless, with tiny budgets."""

import pytest

from envs import make_task
from envs.collect import CollectSpec, collect
from envs.dataset import DatasetWriter


def write_dataset(path, task="two-room", policy="noisy-expert", steps=10, episodes=4, image_size=64, seed=3):
    """Collect `episodes` episodes of `steps` actions and write them as a dataset folder at `path`."""
    spec = CollectSpec(task=task, policy=policy, steps=steps, seed=seed, image_size=image_size)
    recorded = list(collect(spec, episodes))
    env = make_task(task, pixels=False)
    attrs = {"task": task, "image_size": image_size, "frame_skip": env.frame_skip, "render_revision": env.render_revision, "policy": policy, "seed": seed}
    env.close()
    writer = DatasetWriter(path, episodes, steps + 1, recorded[0], attrs)
    for episode in recorded:
        writer.add(episode)
    writer.close()
    return path


@pytest.fixture
def tiny_dataset(tmp_path):
    """A 4-episode, 10-step noisy-expert TwoRoom dataset folder."""
    return write_dataset(tmp_path / "data")
