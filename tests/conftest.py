"""Shared fixtures: tests run on CPU, headless, with tiny budgets."""

import pytest

from envs.collect import CollectSpec, collect
from envs.dataset import DatasetWriter


@pytest.fixture
def tiny_dataset(tmp_path):
    """A 4-episode, 10-step noisy-expert TwoRoom dataset folder."""
    spec = CollectSpec(task="two-room", policy="noisy-expert", steps=10, seed=3)
    episodes = list(collect(spec, 4))
    writer = DatasetWriter(tmp_path / "data", 4, 11, episodes[0], {"task": "two-room", "image_size": 64, "frame_skip": 5, "policy": "noisy-expert", "seed": 3})
    for episode in episodes:
        writer.add(episode)
    writer.close()
    return tmp_path / "data"
