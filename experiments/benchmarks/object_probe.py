"""Does a policy's image vector say where the object is, and could it? For one `jepa imitate`
run on a Meta-World task (the object's x, y; push and pick-place reach it first) or on PushT
(the block's pose: x, y and its angle's cosine and sine), on the first `--frames` frames of each
episode of its demonstrations (on Meta-World, before the hand reaches the object: the scripted
policies take about 30 steps on push and pick-place) and on `--fresh` fresh starts:

- learned: a ridge regression from the trained policy's frozen vector of the current frame to
  the object's variables, fitted on the demonstrations' frames (penalty chosen on the last fifth
  of the demonstrations, `worldmodel/probe.py`) and scored on the fresh starts;
- learnable: the same encoder architecture and frame vector trained from scratch, supervised by
  the object's variables (L1, random shift as in imitation), scored on the fresh starts;
- goal: a ridge regression from the policy's vector of the goal image (through its own encoder
  with `--model.goal-encoder`) to the goal's variables, fitted on the demonstrations' goal images
  (left out for policies without the goal image, or fewer than 5 demonstrations whose goals vary).

Scores are R2 per variable on the fresh starts (1: exact, 0: no better than the mean).

The object's position is the true simulator state: a diagnostic, never a training signal of a
policy. "Learnable" far better than "learned" means the data and the network suffice and the
imitation signal is what fails to teach the encoder where the object is.

    python -m experiments.benchmarks.object_probe --run runs/im2/mw9_push/act [--steps 1500]
    python -m experiments.benchmarks.object_probe --run PUSH_T_RUN --frames 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from agents.chunk_policy import ChunkPolicy, random_shift
from envs import task_spec
from envs.dataset import EpisodeDataset
from envs.push_t import PushTEnv
from experiments.protocol import eval_reset_seeds
from experiments.runs import load_policy
from infra.errors import UserError
from worldmodel.encoders import FrameLatent, build_encoder
from worldmodel.probe import fit_probe, r2_score

block_pose = lambda states: PushTEnv.probe_variables(states)[:, :4]  # [N, 4]: PushT's block x, y, cos, sin (goal states are full states too)
OBJECTS = {  # task family: (variable names, the object's variables from states [N, S], the goal's from goal states [N, G])
    "metaworld": (("x", "y"), lambda states: states[:, 4:6], lambda goals: goals[:, :2]),  # state: hand xyz 0:3, gripper 3, object xyz 4:7
    "push-t": (("x", "y", "cos", "sin"), block_pose, block_pose),
}


def object_family(task: str) -> str:
    """The OBJECTS entry of a task, or a one-line error for a task with no object to probe."""
    family = "metaworld" if task.startswith("metaworld:") else task.removesuffix("-fixed")
    if family not in OBJECTS:
        raise UserError(f"{task} has no object to probe: the probe reads Meta-World's object or PushT's block")
    return family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `jepa imitate --out RUN` folder of a Meta-World task or PushT")
    parser.add_argument("--frames", type=int, default=30, help="frames from the start of each demonstration")
    parser.add_argument("--fresh", type=int, default=100, help="fresh starts to score on")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the supervised encoder")
    args = parser.parse_args()
    try:
        probe(args.run, args.frames, args.fresh, args.steps)
    except UserError as error:
        sys.exit(f"object_probe.py: error: {error}")


def probe(run: Path, frames: int, fresh: int, steps: int, seed: int = 0) -> dict:
    """Prints and returns {"names": the variables, "learned": R2 per variable, "learnable": R2 per
    variable, "goal": R2 per variable or None} on the fresh starts."""
    if min(frames, steps) < 1 or fresh < 3:
        raise UserError(f"--frames and --steps must be positive and --fresh at least 3, got {frames}, {steps}, {fresh}")
    policy, config = load_policy(run, ChunkPolicy)
    names, object_of, goal_of = OBJECTS[object_family(config["task"])]
    demos = EpisodeDataset(config["data"])
    index = np.concatenate([np.arange(demos.episode_starts[e], min(demos.episode_starts[e] + frames, demos.episode_starts[e + 1]))
                            for e in range(demos.num_episodes)])
    train_pixels, train_vars = torch.from_numpy(demos.frames[index]), object_of(demos.state[index])
    if len(index) < 5 or (train_vars.std(0) == 0).any():
        raise UserError(f"{config['data']} gives {len(index)} frames whose object lies at one place: the probe needs 5 or more, over episodes whose object moves")
    env = task_spec(config["task"]).env_class(image_size=policy.cfg.image_size, frame_skip=config["env_frame_skip"])
    try:
        fresh_pixels, fresh_vars, fresh_goals, fresh_goal_vars = [], [], [], []
        for reset in eval_reset_seeds(1, fresh):  # seed 1's episodes: apart from the protocol's seed-0 evaluation
            observation, info = env.reset(seed=reset)
            fresh_pixels.append(observation["pixels"])
            fresh_vars.append(info["state"])
            fresh_goals.append(env.render_goal())
            fresh_goal_vars.append(np.copy(env.goal_state))
    finally:
        env.close()
    fresh_pixels, fresh_vars, fresh_goal_vars = torch.from_numpy(np.stack(fresh_pixels)), object_of(np.stack(fresh_vars)), goal_of(np.stack(fresh_goal_vars))
    goal_vars = goal_of(demos.goal_state)
    read_goal = policy.cfg.goal_image and len(goal_vars) >= 5 and (goal_vars.std(0) > 0).all()  # else no goal row
    with torch.no_grad():
        vectors = lambda pixels: np.concatenate([policy.embed(chunk[:, None])[:, 0].numpy() for chunk in pixels.split(1000)])  # [N, width]
        goal_vectors = lambda goals: policy.embed_goal(torch.from_numpy(goals)).numpy()  # [N, width]
        learned = fit_probe(vectors(train_pixels), train_vars, vectors(fresh_pixels), fresh_vars).tolist()
        goal = fit_probe(goal_vectors(demos.goal_frames), goal_vars, goal_vectors(np.stack(fresh_goals)), fresh_goal_vars).tolist() if read_goal else None
    torch.manual_seed(seed)
    encoder, latent = build_encoder(policy.cfg.encoder), FrameLatent(policy.cfg.encoder.grid, policy.cfg.encoder.dim, policy.cfg.width)
    head = torch.nn.Linear(policy.cfg.width, len(names))
    predict = lambda pixels: head(latent(encoder(pixels[:, None])[:, 0]))  # [N, variables], normalised
    mean, std = train_vars.mean(0), train_vars.std(0)
    target = torch.from_numpy((train_vars - mean) / std).float()
    parameters = [*encoder.parameters(), *latent.parameters(), *head.parameters()]
    optimiser, generator = torch.optim.AdamW(parameters, 5e-4), torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(0, len(index), (64,), generator=generator)
        shifted = random_shift(train_pixels[pick][:, None], policy.cfg.shift, generator)[:, 0] if policy.cfg.shift else train_pixels[pick]
        loss = (predict(shifted) - target[pick]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        learnable = r2_score(fresh_vars, predict(fresh_pixels).numpy() * std + mean).tolist()
    print(f"{config['task']}, R2 at {fresh} fresh starts of {run} ({len(index)} demonstration frames):")
    what = ", ".join(names)
    rows = [(f"the object's {what} from the frame vector, learned (frozen policy vector, ridge)", learned),
            (f"the object's {what} from the frame vector, learnable (same encoder, supervised, {steps} steps)", learnable),
            (f"the goal's {what} from the goal image's vector ({demos.num_episodes} goal images, ridge)", goal)]
    for row, r2 in rows:
        scores = "R2 " + ", ".join(f"{name} {value:.2f}" for name, value in zip(names, r2)) if r2 is not None else None
        print(f"  {row}: {scores or 'not measured (no goal image, or fewer than 5 goals that vary)'}")
    return {"names": list(names), "learned": learned, "learnable": learnable, "goal": goal}


if __name__ == "__main__":
    main()
