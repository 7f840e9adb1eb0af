"""Export an episode dataset to Minari (Farama's standard offline-RL format).

Minari's writer pulls in jax (about 380 MB), so it is an optional extra:
`pip install 'minari[create,hdf5]'`. The conversion to Minari's episode buffers is ours and
needs nothing extra.
"""

from __future__ import annotations

import numpy as np

from envs import task_spec
from envs.dataset import EpisodeDataset
from infra.errors import UserError


def minari_buffers(dataset: EpisodeDataset) -> list[dict]:
    """One Minari episode buffer per episode: T + 1 observations, T actions, rewards, flags."""
    buffers = []
    for e in range(dataset.num_episodes):
        frames = dataset.episode(e)
        steps = frames.stop - frames.start - 1
        truncations = np.zeros(steps, bool)
        truncations[-1] = True  # fixed-length episodes end by time limit, never by termination
        buffers.append({
            "observations": {"pixels": np.asarray(dataset.frames[frames]), "proprio": dataset.proprio[frames]},
            "actions": dataset.actions[frames][:-1],
            "rewards": dataset.reward[frames][1:],
            "terminations": np.zeros(steps, bool),
            "truncations": truncations,
            "infos": {"state": dataset.state[frames], "is_success": dataset.is_success[frames]},
        })
    return buffers


def export_minari(dataset: EpisodeDataset, dataset_id: str):
    """Write `dataset` into the local Minari store as `dataset_id`; returns the MinariDataset."""
    try:
        import minari
    except ImportError:
        raise UserError("exporting to Minari needs its writer: pip install 'minari[create,hdf5]' (pulls jax, about 380 MB)") from None
    spec = task_spec(dataset.task)
    env = spec.env_class(image_size=int(dataset.attrs["image_size"]), pixels=False)
    try:
        return minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=minari_buffers(dataset), env=spec.gym_id,
            action_space=env.action_space, observation_space=env.observation_space,
            algorithm_name=str(dataset.attrs["policy"]), description=f"jepa-worlds {dataset.task} episodes")
    finally:
        env.close()
