"""`jepa tasks` and `jepa collect`: list the tasks, and record episode datasets from a policy."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs import TASKS, make_task
from envs.collect import collect
from envs.dataset import DatasetWriter, EpisodeDataset
from envs.minari_export import export_minari
from experiments.runs import demonstrator_spec
from experiments.video import write_video
from infra.errors import UserError
from infra.progress import progress

VIDEO_EPISODES = 4


@dataclass
class Tasks:
    """List the tasks with their spaces and success criteria."""

    json: bool = False
    """Print one JSON object on stdout."""

    def __call__(self) -> dict:
        rows = {}
        for name, spec in TASKS.items():
            env = make_task(name, pixels=False)
            rows[name] = {
                "gym_id": spec.gym_id, "summary": spec.summary,
                "action_dim": int(env.action_space.shape[0]), "proprio_dim": int(env.observation_space["proprio"].shape[0]),
                "state_dim": env.state_dim, "frame_skip": env.frame_skip, "episode_steps": env.default_max_steps,
                "success": env.success_criterion,
            }
            env.close()
        if not self.json:
            width, gym_width = max(map(len, rows)), max(len(row["gym_id"]) for row in rows.values())
            for name, row in rows.items():
                print(f"{name:{width}s} {row['gym_id']:{gym_width}s} actions {row['action_dim']}  proprio {row['proprio_dim']}  "
                      f"steps {row['episode_steps']:3d}  {row['summary']}\n{'':{width}s} success: {row['success']}")
            print("metaworld:<task>-v3 (e.g. metaworld:reach-v3): the Meta-World v3 tasks, for collect, imitate and policy-eval;"
                  " see envs/metaworld_tasks.py")
        return rows


@dataclass
class Collect:
    """Run a policy in a task and write an episode dataset (HDF5, see DATASET.md)."""

    task: str = "two-room"
    """Task: two-room, reacher, push-t, cube, or a Meta-World task such as metaworld:reach-v3."""
    policy: str = "noisy-expert"
    """random, wander (random actions held 1-10 steps), expert (scripted, uses the true state), noisy-expert
    (expert + noise), mixed (half the episodes noisy-expert, half wander: the most diverse data), or sb3:RUN
    (the stable-baselines3 expert of `jepa train-expert --out RUN`)."""
    episodes: int = 50
    """Number of episodes."""
    out: Path = Path("runs/data")
    """Folder to write episodes.h5 (and episodes.mp4 with --video) into."""
    seed: int = 0
    """Seed: episode i is seeded from (seed, i), whatever the number of workers."""
    workers: int = 1
    """Worker processes."""
    steps: int = 0
    """Actions per episode (0: the task's default)."""
    image_size: int = 64
    """Rendered frame size in pixels (square)."""
    frame_skip: int | None = None
    """Physics steps per action (None: the task's default)."""
    video: bool = False
    """Also write an mp4 of the first episodes (observation | goal)."""
    depth: bool = False
    """Also record the camera's depth image of every frame (float32, metres) and its intrinsics, for
    `jepa pretrain --objective 3d-jepa` (this project's MuJoCo tasks)."""
    json: bool = False
    """Print one JSON object on stdout: episodes, frames, frames_per_s, success_rate."""

    def __call__(self) -> dict:
        spec = demonstrator_spec(self.task, self.policy, steps=self.steps, image_size=self.image_size,
                                 frame_skip=self.frame_skip, seed=self.seed, depth=self.depth)
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file; give a folder")
        env = make_task(self.task, image_size=self.image_size, frame_skip=self.frame_skip)  # checks the options
        frame_skip, render_revision = env.frame_skip, env.render_revision
        if self.depth and not hasattr(env, "depth_image"):
            raise UserError(f"{self.task} renders no depth: --depth works on this project's MuJoCo tasks (jepa tasks)")
        depth_camera = {"depth_camera": json.dumps(env.depth_camera())} if self.depth else {}
        env.close()
        episodes = collect(spec, self.episodes, self.workers)  # checks the counts before the bar starts
        episode_frames = spec.episode_steps + 1
        writer, successes, video = None, [], []
        bar = progress(total=self.episodes, unit="ep", desc=f"collect {self.task}")
        start = time.perf_counter()
        try:
            for index, episode in enumerate(episodes):
                if writer is None:
                    attrs = {"task": self.task, "image_size": self.image_size, "policy": spec.policy, "seed": self.seed,
                             "frame_skip": frame_skip, "render_revision": render_revision, **depth_camera,
                             "config": json.dumps(dataclasses.asdict(spec) | {"episodes": self.episodes, "factory": None})}
                    writer = DatasetWriter(self.out, self.episodes, episode_frames, episode, attrs)
                writer.add(episode)
                successes.append(episode.succeeded)
                if index < VIDEO_EPISODES and self.video:
                    video.append(np.concatenate([episode.frames, np.broadcast_to(episode.goal_frame, episode.frames.shape)], axis=2))
                bar.update(1)
                bar.set_postfix(fps=f"{(index + 1) * episode_frames / (time.perf_counter() - start):.0f}", success=f"{np.mean(successes):.2f}", refresh=False)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            bar.close()
        elapsed = time.perf_counter() - start
        path = writer.close()
        (self.out / "episodes.mp4").unlink(missing_ok=True)  # a video of an older dataset would mislead
        frames = self.episodes * episode_frames
        result = {"episodes": self.episodes, "frames": frames, "frames_per_s": round(frames / elapsed, 1),
                  "success_rate": float(np.mean(successes)), "path": str(path)}
        if video:
            result["video"] = str(write_video(self.out / "episodes.mp4", np.concatenate(video)))
        if not self.json:
            print(f"wrote {frames} frames of {self.episodes} episodes to {path} at {result['frames_per_s']:.0f} frames/s; "
                  f"{self.policy} success rate {result['success_rate']:.2f}" + (f"; video {result['video']}" if video else ""))
        return result


@dataclass
class ExportMinari:
    """Export an episode dataset to the local Minari store (needs `pip install 'minari[create,hdf5]'`)."""

    data: Path
    """Dataset folder written by `jepa collect`."""
    dataset_id: str = ""
    """Minari id, e.g. jepa/two-room/noisy-expert-v0 (default: from the task and policy)."""
    json: bool = False
    """Print one JSON object on stdout."""

    def __call__(self) -> dict:
        dataset = EpisodeDataset(self.data)
        dataset_id = self.dataset_id or f"jepa/{dataset.task}/{dataset.attrs['policy']}-v0"
        exported = export_minari(dataset, dataset_id)
        result = {"dataset_id": dataset_id, "episodes": int(exported.total_episodes)}
        if not self.json:
            print(f"exported {result['episodes']} episodes as Minari dataset {dataset_id}")
        return result
