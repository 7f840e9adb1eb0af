"""What a run's learned goal distance (`jepa train-distance`) has learned, on held-out episodes:
the model steps it predicts between frames k model steps apart in one episode (it should grow
with k, and may stay below k where the data's paths wander), and how it correlates with the true
position distance of random held-out frame pairs (the simulator state is used for this check
only).

    python -m experiments.benchmarks.goal_distance_check --run RUN [--pairs 2000]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from envs import task_spec
from envs.dataset import EpisodeDataset, split_episodes
from experiments.report import markdown_table
from experiments.runs import load_goal_distance, load_world_model
from infra.errors import UserError
from worldmodel.latents import standardised_latents


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    try:
        world_model, config = load_world_model(args.run)
        distance = load_goal_distance(args.run, world_model)
        dataset = EpisodeDataset(config["data"])
    except UserError as exc:
        sys.exit(f"goal_distance_check: error: {exc}")
    _, held_out = split_episodes(dataset, config["holdout"])
    bounds, skip = dataset.episode_starts, world_model.cfg.frame_skip
    frames = np.concatenate([np.arange(bounds[e], bounds[e + 1]) for e in held_out])
    latents = standardised_latents(world_model, dataset.frames[frames], dataset.proprio[frames])  # [F, N, D]
    row_of = {int(f): i for i, f in enumerate(frames)}

    def steps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return distance.steps_from_value(-distance.gap(latents[a], latents[b])).numpy()

    max_apart = min(bounds[e + 1] - bounds[e] for e in held_out) // skip - 1  # model steps within the shortest episode
    rows = []
    for k in sorted({1, 2, 4, 8, 12, 16, max_apart} & set(range(1, max_apart + 1))):
        starts = [(bounds[e] + skip * j, bounds[e] + skip * (j + k)) for e in held_out for j in range(max_apart + 1 - k)]
        predicted = steps(np.array([row_of[a] for a, _ in starts]), np.array([row_of[b] for _, b in starts]))
        rows.append({"k": k, "median": f"{np.median(predicted):.2f}",
                     "spread": f"{np.quantile(predicted, 0.1):.2f} - {np.quantile(predicted, 0.9):.2f}"})
    print(f"run {args.run}: {len(held_out)} held-out episodes, model steps of {skip} env steps")
    print(markdown_table(rows, {"k": "model steps apart in one episode", "median": "learned steps (median)", "spread": "10% - 90%"}))
    env = task_spec(config["task"]).env_class(image_size=world_model.image_size)
    positions = [env.probe_names.index(n) for n in env.position_names]
    true = env.probe_variables(dataset.state[frames])[:, positions]
    env.close()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(frames), args.pairs), rng.integers(0, len(frames), args.pairs)
    learned, straight = steps(a, b), np.linalg.norm(true[a] - true[b], axis=1)
    print(f"\nrandom held-out pairs ({args.pairs}): correlation of learned steps with the true position distance "
          f"{np.corrcoef(learned, straight)[0, 1]:.3f}")
    if config["task"] == "two-room":
        apart = np.sign(true[a, 0]) != np.sign(true[b, 0])
        print(f"two-room: mean learned steps {learned[~apart].mean():.2f} within a room, {learned[apart].mean():.2f} across the wall "
              f"(true position distance {straight[~apart].mean():.2f} and {straight[apart].mean():.2f})")


if __name__ == "__main__":
    main()
