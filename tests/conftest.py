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


# a transformer policy small enough to train in a second
TINY = ["--model.width", "16", "--model.depth", "1", "--model.heads", "2", "--model.encoder.width", "8", "--model.chunk", "4",
        "--model.execute", "2", "--train.batch-size", "8", "--train.warmup", "2", "--train.log-every", "2"]


@pytest.fixture(scope="session")
def demos(tmp_path_factory):
    """Four 40-step TwoRoom expert demonstrations, shared by the imitation tests."""
    return write_dataset(tmp_path_factory.mktemp("im") / "demos", policy="expert", steps=40, seed=5)


@pytest.fixture(scope="session")
def trained_policy(demos, tmp_path_factory):
    """A run folder with a tiny act-jepa policy trained 4 steps on `demos`."""
    run = tmp_path_factory.mktemp("im") / "run"
    from experiments.cli import main

    assert main(["imitate", "--data", str(demos), "--out", str(run), "--train.steps", "4", *TINY]) == 0
    return run

