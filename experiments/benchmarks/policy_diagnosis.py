"""Why does a learned policy fail? Separates "did not fit its demonstrations" from "does not
generalise" and "does not look at the image", for one `jepa imitate` run:

- success from the starts of the first N demonstrations it learned from, beside success from N
  fresh starts (policy-eval's first N seed-0 episodes), both over the task's episode length;
- the spread across fresh starts of the policy's first action, beside the scripted expert's
  (noise-free) first actions from the same starts (a policy that ignores the goal gives one
  first action for all);
- the spread across fresh starts of the image vectors of the first frame and of the goal image
  (mean over dimensions of the std over episodes, as `collapse/std_mean` in training);
- Meta-World tasks, from the fresh starts: whether the hand goes to the object. The slope of the
  hand's x and y where it is lowest in the first 60 steps against the object's start x and y
  (about 0: it goes to one place whatever the object's; about 1: it follows the object, perhaps
  at an offset), and the median over episodes of the hand's closest approach to the object in
  x, y. Meaningful for tasks that begin by reaching an object (push, pick-place). Then what
  became of the object: the share of episodes that moved it more than 3 cm in x, y, and the
  median of its last distance in x, y to the goal over those (a grasp that failed, or one lost on the way).

    python -m experiments.benchmarks.policy_diagnosis --run runs/im2/mw9_reach/act [--episodes 25]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from agents.chunk_policy import ChunkPolicy
from agents.demonstrations import demonstration_episodes
from envs import task_spec
from envs.collect import episode_seeds
from envs.dataset import EpisodeDataset
from envs.metaworld_tasks import PREFIX as METAWORLD
from experiments.protocol import eval_reset_seeds, rate, run_lockstep
from experiments.report import markdown_table
from experiments.runs import load_policy
from infra.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `jepa imitate --out RUN` folder")
    parser.add_argument("--episodes", type=int, default=25, help="starts of each kind")
    args = parser.parse_args()
    try:
        diagnose(args.run, args.episodes)
    except UserError as error:
        sys.exit(f"policy_diagnosis.py: error: {error}")


def diagnose(run: Path, episodes: int) -> dict:
    """Run the diagnosis on `episodes` starts of each kind; prints a table and returns its figures."""
    if episodes < 2:
        raise UserError(f"--episodes must be at least 2 (spreads across starts), got {episodes}")
    policy, config = load_policy(run, ChunkPolicy)
    demos = EpisodeDataset(config["data"])
    learned = demonstration_episodes(demos, held_out=config.get("val_episodes", 0))[0]
    if len(learned) != config["demonstrations"] or "seed" not in demos.attrs:
        raise UserError(f"{config['data']} no longer holds the {config['demonstrations']} demonstrations {run} learned from: imitate again")
    own = learned[:episodes]
    starts = {"own demonstrations": [episode_seeds(int(demos.attrs["seed"]), int(e))[0] for e in own],
              "fresh": eval_reset_seeds(0, len(own))}
    spec = task_spec(config["task"])
    kwargs = {"image_size": policy.cfg.image_size, "frame_skip": config["env_frame_skip"]}
    metaworld = config["task"].startswith(METAWORLD)
    rows, report, first_obs, fresh_states = [], {}, {}, []
    with contextlib.ExitStack() as stack:
        envs = []
        for _ in own:
            envs.append(spec.env_class(**kwargs))
            stack.callback(envs[-1].close)
        for name, resets in starts.items():
            first_actions = []

            def act(obs, _, name=name):
                first_obs.setdefault(name, obs)
                actions = policy.select_action(obs).numpy()
                if not first_actions:
                    first_actions.append(actions)
                return actions

            def record(_):
                fresh_states.append(np.stack([env.last_state for env in envs]))  # Meta-World's state [n, 39]

            policy.reset()
            on_step = record if metaworld and name == "fresh" else None
            success, ci = rate(run_lockstep(envs, resets, spec.env_class.default_max_steps, act, on_step).success.tolist())
            report[name] = {"success": success, "ci95": ci, "first_action_std": float(first_actions[0].std(0).mean())}
            rows.append({"starts": f"{name} ({len(resets)})", "success": f"{success:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]",
                         "action": f"{report[name]['first_action_std']:.3f}"})
        if not (first_obs["own demonstrations"]["pixels"] == demos.frames[demos.episode_starts[own]]).all():
            raise UserError(f"the starts replayed from {config['data']} differ from its recorded first frames: was it collected by another version?")
        expert = []
        for env, seed in zip(envs, starts["fresh"]):
            env.reset(seed=seed)
            expert.append(spec.expert_class(env)())
    fresh = first_obs["fresh"]
    with torch.no_grad():
        vectors = torch.stack([policy.embed(torch.as_tensor(fresh["pixels"])[:, None])[:, 0], policy.embed_goal(torch.as_tensor(fresh["goal"]))], 1)  # [n, 2 (first frame, goal), width]
    spread = vectors.std(0).mean(1)  # [2], as training's collapse/std_mean
    report |= {"frame_vector_std": float(spread[0]), "goal_vector_std": float(spread[1]),
               "expert_first_action_std": float(np.std(expert, 0).mean())}
    tracking = ""
    if metaworld:
        report |= hand_and_object(np.stack(fresh_states, 1))
        tracking = (f"; hand-follows-object slope (x, y): {report['object_slope'][0]:.2f}, {report['object_slope'][1]:.2f}; "
                    f"closest approach to the object, median: {100 * report['closest_approach']:.1f} cm; object moved over {100 * MOVED_BY:.0f} cm: "
                    f"{report['object_moved']:.0%} of the episodes, its last distance to the goal there, median: {100 * report['moved_object_to_goal']:.1f} cm")
    print(f"{config['task']}, {config['model']['kind']} policy of {run}, {config['demonstrations']} demonstrations "
          f"({config.get('demonstrator', 'expert')})")
    print(markdown_table(rows, {"starts": "starts", "success": "success (Wilson 95%)", "action": "first-action std across starts"}))
    print(f"scripted expert's first-action std across the fresh starts: {report['expert_first_action_std']:.3f}; image-vector std across fresh starts: "
          f"first frame {report['frame_vector_std']:.4f}, goal image {report['goal_vector_std']:.4f}{tracking}")
    return report


MOVED_BY = 0.03  # metres in x, y: an object moved farther than this from its start was moved


def hand_and_object(states: np.ndarray, window: int = 60, moved_by: float = MOVED_BY) -> dict:
    """Meta-World states [n, T, 39] (hand xyz at 0:3, first object's xyz at 4:7, goal xyz at 36:39) ->
    {"object_slope": per axis x, y, the least-squares slope of the hand's position where it is
    lowest in the first `window` steps against the object's start; "closest_approach": the median
    over episodes of the hand's least distance in x, y to the object; "object_moved": the share of
    episodes whose object got farther than `moved_by` in x, y from its start; "moved_object_to_goal": the
    median over those of the object's last distance in x, y to the goal (NaN if none); metres}."""
    hand, start = states[:, :window, :3], states[:, 0, 4:6]
    lowest = hand[np.arange(len(hand)), hand[..., 2].argmin(1), :2]  # [n, 2]
    closest = np.linalg.norm(states[..., :2] - states[..., 4:6], axis=-1).min(1)  # [n]
    moved = np.linalg.norm(states[..., 4:6] - start[:, None], axis=-1).max(1) > moved_by  # [n]
    to_goal = np.linalg.norm(states[:, -1, 4:6] - states[:, -1, 36:38], axis=-1)  # [n]
    return {"object_slope": [float(np.polyfit(start[:, k], lowest[:, k], 1)[0]) for k in range(2)],
            "closest_approach": float(np.median(closest)), "object_moved": float(moved.mean()),
            "moved_object_to_goal": float(np.median(to_goal[moved])) if moved.any() else float("nan")}


if __name__ == "__main__":
    main()
