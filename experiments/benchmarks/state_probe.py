"""What a world model's state holds: ridge probes (`probe.fit_probe`) from its standardised state,
fitted on training-episode frames and scored by R2 on held-out episodes, onto the task's probe
variables (PushT's block position and angle, Cube's cube position and height, Reacher's
fingertip). Rows: each part of the state alone and together, and the state a goal image gets
(its proprio read from the image). The simulator state is read for this check only.

    python -m experiments.benchmarks.state_probe --run RUN [--train-frames 4000 --test-frames 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from envs import task_spec
from envs.dataset import EpisodeDataset, split_episodes
from experiments.report import markdown_table
from experiments.runs import load_world_model
from infra.errors import UserError
from worldmodel.latents import standardised_latents
from worldmodel.probe import fit_probe, frame_indices


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--train-frames", type=int, default=4000)
    parser.add_argument("--test-frames", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        model, config = load_world_model(args.run)
        dataset = EpisodeDataset(config["data"])
    except UserError as exc:
        sys.exit(f"state_probe: error: {exc}")
    env = task_spec(config["task"]).env_class(pixels=False)
    train_eps, test_eps = split_episodes(dataset, config["holdout"])
    train, test = frame_indices(dataset, train_eps, args.train_frames), frame_indices(dataset, test_eps, args.test_frames)
    states = {name: standardised_latents(model, dataset.frames[idx], dataset.proprio[idx])[:, 0].double().numpy() for name, idx in
              (("train", train), ("test", test))}
    from_image = standardised_latents(model, dataset.frames[test])[:, 0].double().numpy()  # proprio read from the image
    y_train, y_test = env.probe_variables(dataset.state[train]), env.probe_variables(dataset.state[test])
    parts = model.parts
    subsets = {name: [name] for name in parts}
    if len(parts) > 1:
        subsets["whole state"] = list(parts)
    columns = lambda names: np.concatenate([np.arange(parts[n].start, parts[n].stop) for n in names])  # noqa: E731
    rows = {}
    for label, names in subsets.items():
        c = columns(names)
        rows[label] = fit_probe(states["train"][:, c], y_train, states["test"][:, c], y_test)
    if "proprio" in parts:
        rows["whole state, goal-image proprio"] = fit_probe(states["train"], y_train, from_image, y_test)
    result = {"run": args.run, "task": config["task"], "variables": list(env.probe_names),
              "r2": {label: [round(float(v), 3) for v in r2] for label, r2 in rows.items()}}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{config['task']}: R2 on {len(test)} frames of {len(test_eps)} held-out episodes (probes fitted on {len(train)} training frames)")
    table = [{"state": label, **{n: f"{v:.2f}" for n, v in zip(env.probe_names, r2)}} for label, r2 in rows.items()]
    print(markdown_table(table, {"state": "state", **{n: n for n in env.probe_names}}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
