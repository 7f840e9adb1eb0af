"""Collection throughput against the raw MuJoCo render + physics rate of the same scene.

For each task: the raw rate (`mujoco.Renderer` + `mj_step`, no env, no policy, no disk) and the
rate of `jepa collect` (random policy, HDF5 writing included) with 1 and 2 workers, measured in
the same run, median of --repeats. The figure is collect rate / (workers x raw rate).

    python -m experiments.benchmarks.collect_throughput [--tasks two-room,reacher] [--repeats 3] [--frames 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time

import mujoco
import numpy as np

import envs.gl  # noqa: F401
from envs import make_task
from experiments.data_commands import Collect
from experiments.report import markdown_table


def raw_rate(task: str, frames: int = 2000) -> float:
    """Frames/s of bare physics + rendering of the task's scene at 64x64."""
    env = make_task(task)
    model, data = env.model, mujoco.MjData(env.model)
    env.set_state(env.random_state(np.random.default_rng(0)), data)
    renderer = mujoco.Renderer(model, 64, 64)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(frames):
        data.ctrl[:] = rng.uniform(-1, 1, model.nu) * model.actuator_ctrlrange[:, 1]
        mujoco.mj_step(model, data, nstep=env.frame_skip)
        renderer.update_scene(data, camera=env.camera)
        renderer.render()
    elapsed = time.perf_counter() - start
    renderer.close()
    env.close()
    return frames / elapsed


def collect_rate(task: str, workers: int, frames: int) -> float:
    """Frames/s of `jepa collect --policy random` writing a real dataset of about `frames` frames."""
    episodes = -(-frames // (make_task(task, pixels=False).default_max_steps + 1))
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(io.StringIO()):
        result = Collect(task=task, policy="random", episodes=episodes, out=__import__("pathlib").Path(out),
                         workers=workers, json=True)()
    return result["frames_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="two-room,reacher,push-t,cube")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20000, help="frames per collect run (worker start-up amortises)")
    args = parser.parse_args()
    rows = []
    for task in args.tasks.split(","):
        raw, one, two = [], [], []
        for _ in range(args.repeats):  # interleaved, so machine noise hits all three alike
            raw.append(raw_rate(task))
            one.append(collect_rate(task, 1, args.frames))
            two.append(collect_rate(task, 2, args.frames))
        raw_m, one_m, two_m = (float(np.median(x)) for x in (raw, one, two))
        rows.append({"task": task, "raw_fps": round(raw_m), "collect_1w_fps": round(one_m), "collect_2w_fps": round(two_m),
                     "ratio_1w": round(one_m / raw_m, 2), "ratio_2w_per_worker": round(two_m / (2 * raw_m), 2)})
    print(f"# {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, 64x64, MUJOCO_GL={envs.gl.BACKEND}, "
          f"median of {args.repeats}")
    print(markdown_table(rows, {"task": "task", "raw_fps": "raw render+physics fps", "collect_1w_fps": "collect 1 worker",
                                "collect_2w_fps": "collect 2 workers", "ratio_1w": "1w / raw", "ratio_2w_per_worker": "2w / (2 x raw)"}))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
