"""`jepa imitate` and `jepa policy-eval`: learn a policy from demonstrations (ACT-JEPA, ACT-style
chunking or behaviour cloning, `agents/policy.py`; an MLP on colour moments, `agents/moment_policy.py`) and measure its success in the simulator on
episodes no demonstration saw, beside the random floor and the demonstrator's own success."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.moment_policy import RECIPE_MODEL, RECIPE_TRAIN, build_policy
from agents.policy import POLICY_KINDS, ChunkActor, PolicyConfig, random_shift
from envs import stale_frames, task_spec
from envs.collect import CollectSpec, make_policy
from envs.dataset import EpisodeDataset
from envs.symmetry import ELEMENTS, SquareSymmetry, turn_images, turn_vectors
from experiments.expert_commands import demonstrator_spec
from experiments.plan_commands import parse_seeds
from experiments.pretrain_commands import NOT_RESUME_RELEVANT, encoder_checkpoint
from experiments.protocol import actor_success, eval_reset_seeds, rate, run_lockstep
from experiments.video import write_video
from infra.errors import UserError
from infra.files import replace_folder, write_json
from infra.progress import progress
from worldmodel.checkpoint import FILENAME, dataclass_from_dict, load_checkpoint, read_metadata
from worldmodel.encoders import ColourMoments
from worldmodel.jepa import load_jepa
from worldmodel.trainer import TrainConfig, Trainer

POLICY_STAGE, POLICY_EVAL_STAGE, CANDIDATES = "policy", "policy_eval", "candidates"
IMITATE_TRAIN = TrainConfig(steps=3000, batch_size=64, lr=5e-4, checkpoint_every=500)  # the transformer policies' budget
MOMENT_FRAME_STRIDE = 8  # every 8th demonstration frame fits the colour moments' palette and statistics
VAL_WINDOWS, VAL_BATCH = 512, 64  # windows scored (held out, or for --candidates the learned ones), drawn once (every score sees the same ones), and per forward pass


def last_actions(dataset: EpisodeDataset, episodes: np.ndarray, trim: bool) -> np.ndarray:
    """Frame index of each episode's last action used: the one that first reaches the goal
    (trim), or the episode's last (its final row holds no action)."""
    lasts = dataset.episode_starts[episodes + 1] - 2
    if trim:
        for i, e in enumerate(episodes):
            reached = np.flatnonzero(dataset.is_success[dataset.episode(e)])
            if len(reached) and reached[0] > 0:
                lasts[i] = dataset.episode_starts[e] + reached[0] - 1
    return lasts


def demonstration_episodes(dataset: EpisodeDataset, successful_only: bool = True, held_out: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the episodes a policy learns from, and of those among the last `held_out` episodes
    kept apart to score it: all, or those that reach their goal and do not start there (nothing to
    learn; so fewer than `held_out` may be scored)."""
    if not 0 <= held_out < dataset.num_episodes:
        raise UserError(f"--val-episodes must be from 0 to {dataset.num_episodes - 1} ({dataset.path} holds {dataset.num_episodes} episodes), got {held_out}")
    episodes = np.arange(dataset.num_episodes)
    if successful_only:
        episodes = episodes[[dataset.is_success[dataset.episode(e)][1:].any() and not dataset.is_success[dataset.episode_starts[e]] for e in episodes]]
    split = np.searchsorted(episodes, dataset.num_episodes - held_out)
    if split == 0:
        before = " before the held-out ones" if held_out else ""
        raise UserError(f"no demonstration in {dataset.path}{before} reaches its goal: collect with --policy expert")
    if held_out and split == len(episodes):
        raise UserError(f"none of the last {held_out} demonstrations in {dataset.path} reaches its goal: hold out more with --val-episodes")
    return episodes[:split], episodes[split:]


def moment_features(dataset: EpisodeDataset, episodes: np.ndarray, lasts: np.ndarray, moments: ColourMoments,
                    symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw colour moments (`moments`, a fitted `ColourMoments`) of every frame a window of `episodes`
    can read (each episode's first to the one after its last action) and of every goal image, in
    each of the square's turns (ELEMENTS; the identity alone unless `symmetric`): frames [E, n, F]
    (frame index i at row rows[i]), goals [E, episodes in the dataset, F], rows [frames in the dataset]."""
    index = np.concatenate([np.arange(dataset.episode_starts[e], last + 2) for e, last in zip(episodes, lasts)])
    rows = np.full(len(dataset.frames), -1)
    rows[index] = np.arange(len(index))
    elements = ELEMENTS if symmetric else ELEMENTS[:1]
    compute = lambda images: torch.cat([moments.features(torch.from_numpy(part)) for part in np.array_split(images, max(1, len(images) // 512))]).numpy()  # noqa: E731
    frames, goals = dataset.read_frames(index), dataset.goal_frames[:]
    return (np.stack([compute(turn_images(frames, *element)) for element in elements]),
            np.stack([compute(turn_images(goals, *element)) for element in elements]), rows)


def demonstration_windows(dataset: EpisodeDataset, episodes: np.ndarray, lasts: np.ndarray, cfg: PolicyConfig,
                          features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """A function `(rng, batch) -> dict` of training windows (shapes in `agents/policy.py`): an
    episode drawn uniformly (every demonstration weighs the same, short ones are not drowned),
    then a frame t of it up to its last action `lasts`, its history (the episode's first frame
    standing in before it), the episode's goal image, actions t..t+k-1 and future frames
    t+s..t+k and the proprio at the episode's waypoint and goal-waypoint steps, each with a mask for
    steps outside the episode (before its start, or past its last action: the observation after
    it still counts) and, for the (frame) waypoints, for those not after t. With
    `cfg.square_symmetry`, each window is turned by one of the task's symmetries drawn at random.
    With `features` (`moment_features`), windows carry the frames', goal's and future frames' cached
    features ("frame_features", "goal_features", "future_features") in place of their images."""
    symmetry = square_symmetry(dataset.task) if cfg.square_symmetry else None
    firsts = dataset.episode_starts[episodes]
    sizes = lasts - firsts + 1
    offsets = np.asarray(cfg.future_offsets, dtype=np.int64)

    def draw(rng: np.random.Generator, batch: int) -> dict:
        pick = rng.integers(0, len(episodes), batch)
        first, last = firsts[pick], lasts[pick]
        t = first + (rng.random(batch) * sizes[pick]).astype(np.int64)  # [B]
        history = np.maximum(t[:, None] - np.arange(cfg.history - 1, -1, -1), first[:, None])  # [B, h]
        ahead = t[:, None] + np.arange(cfg.horizon)  # [B, k]
        action_valid = ahead <= last[:, None]
        future = t[:, None] + offsets  # [B, m]
        future_valid = future <= last[:, None] + 1
        out = {"t": t, "proprio": dataset.proprio[t], "actions": dataset.actions[np.minimum(ahead, last[:, None])], "action_valid": action_valid}
        if features is None:
            out |= {"frames": dataset.read_frames(history), "goal": dataset.goal_frames[episodes[pick]]}
        if len(offsets):
            out |= {"future_valid": future_valid} | ({"future": dataset.read_frames(np.minimum(future, last[:, None] + 1))} if features is None else {})
        for name, steps, after_t in (("waypoints", cfg.waypoints, True), ("goal_waypoints", cfg.goal_waypoints, False)):
            if steps:
                steps = np.asarray(steps, dtype=np.int64)
                at = np.where(steps >= 0, first[:, None] + steps, last[:, None] + 2 + steps)  # [B, w]; -1: the frame after the last action
                valid = (at >= first[:, None]) & (at <= last[:, None] + 1) & ((at > t[:, None]) if after_t else True)
                out |= {name: dataset.proprio[np.clip(at, first[:, None], last[:, None] + 1)], f"{name}_valid": valid}
        elements = rng.integers(0, len(ELEMENTS), batch) if symmetry is not None else np.zeros(batch, np.int64)
        if symmetry is not None:
            turn_windows(out, symmetry, elements)
        if features is not None:  # cached in every turn
            frames, goals, rows = features
            out |= {"frame_features": frames[elements[:, None], rows[history]], "goal_features": goals[elements, episodes[pick]]}
            if len(offsets):
                out["future_features"] = frames[elements[:, None], rows[np.minimum(future, last[:, None] + 1)]]
        return {name: torch.from_numpy(value) for name, value in out.items()}

    return draw


def square_symmetry(task: str) -> SquareSymmetry:
    """The task's symmetries, or a one-line error for a task that declares none."""
    if (symmetry := task_spec(task).env_class.square_symmetry) is None:
        raise UserError(f"{task} does not declare the square's symmetries (a task seen from straight above that they leave unchanged, "
                        "envs/symmetry.py): drop --model.square-symmetry")
    return symmetry


def turn_windows(windows: dict, symmetry: SquareSymmetry, elements: np.ndarray) -> None:
    """Turn each window (numpy arrays, shapes in `agents/policy.py`) in place by its element of ELEMENTS:
    its images, and the planar vectors of its proprio, waypoints and actions."""
    for index in range(1, len(ELEMENTS)):
        chosen = elements == index
        if chosen.any():
            for name in ("frames", "goal", "future"):
                if name in windows:
                    windows[name][chosen] = turn_images(windows[name][chosen], *ELEMENTS[index])
            for name, pairs in (("proprio", symmetry.proprio), ("waypoints", symmetry.proprio), ("goal_waypoints", symmetry.proprio), ("actions", symmetry.actions)):
                if name in windows:
                    windows[name][chosen] = turn_vectors(windows[name][chosen], pairs, *ELEMENTS[index])


def window_scorer(dataset: EpisodeDataset, episodes: np.ndarray, cfg: PolicyConfig, trim: bool, seed: int, features: tuple | None = None):
    """A function `policy -> {loss name: mean}` of the policy's losses (`loss/*` of its forward, and
    their weighted sum `total`) on fixed windows of the demonstrations `episodes`, as recorded (no
    turn, no shift). On demonstrations it did not learn from (held out): where the training loss
    falls and this one does not, the policy memorises its demonstrations rather than reading what
    they share. On those it learned from: how well the run fitted them, one number for every
    training seed (`--candidates` without held-out demonstrations)."""
    draw = demonstration_windows(dataset, episodes, last_actions(dataset, episodes, trim), dataclasses.replace(cfg, square_symmetry=False), features)  # as recorded
    windows = []  # drawn at the first score (a finished run, or another DDP rank, never reads them)

    @torch.no_grad()
    def score(policy: ChunkActor) -> dict:
        if not windows:
            rng = np.random.default_rng([seed, 3])
            windows.extend(draw(rng, VAL_BATCH) for _ in range(VAL_WINDOWS // VAL_BATCH))
        device, means = policy.device, {}
        for batch in windows:
            total, metrics = policy({k: v.to(device) for k, v in batch.items()})
            for name, value in [("total", total)] + [(k.removeprefix("loss/"), v) for k, v in metrics.items() if k.startswith("loss/")]:
                means[name] = means.get(name, 0.0) + float(value) / len(windows)
        return means

    return score


def closest_median(closest: list[float]) -> float | None:
    """Median over episodes of the smallest goal distance each reached, in tolerances (1 is success:
    how near the misses came), or None for tasks that report no goal distance (Meta-World)."""
    finite = [c for c in closest if math.isfinite(c)]
    return round(float(np.median(finite)), 4) if finite and len(finite) == len(closest) else None


def execution_mode(cfg: PolicyConfig) -> str:
    """How a policy runs its chunks, as policy-eval names its results: ensembleE or executeN."""
    return f"ensemble{cfg.ensemble:g}" if cfg.ensemble > 0 else f"execute{cfg.execute}"


def lowest_total(totals: dict[int, float]) -> int:
    """The training seed `--candidates` keeps: the lowest finite total (non-finite ones last), ties to the lowest seed."""
    return min(sorted(totals), key=lambda seed: (not math.isfinite(totals[seed]), totals[seed]))


def eval_result_name(task: str, mode: str, seeds: list[int], episodes: int | str, steps: int | str) -> str:
    """File name of a policy-eval result in RUN/policy_eval (glob patterns may stand for any part)."""
    return f"{task}_{mode}_seeds{'-'.join(map(str, seeds))}_x{episodes}_steps{steps}.json"


def policy_defaults(policy: str) -> dict:
    """`Imitate`'s `train` and `model` defaults for a policy kind: the moments policy's own
    (RECIPE_TRAIN, RECIPE_MODEL in agents/moment_policy.py), else the transformer policies'."""
    if policy != "moments":
        return {"train": dataclasses.replace(IMITATE_TRAIN), "model": PolicyConfig()}
    return {"train": dataclasses.replace(IMITATE_TRAIN, **RECIPE_TRAIN), "model": dataclasses.replace(PolicyConfig(), **RECIPE_MODEL)}


def load_policy(run: Path, kinds: tuple[str, ...] = POLICY_KINDS) -> tuple[ChunkActor, dict]:
    """A trained policy of a run folder, in eval mode, and its run config (a one-line error unless it is of one of `kinds`)."""
    path = Path(run) / POLICY_STAGE / FILENAME
    if not path.exists():
        raise UserError(f"{run} has no policy: run `jepa imitate --data DEMOS --out {run}` first")
    config = read_metadata(path)["config"]
    if (kind := config["model"]["kind"]) not in kinds:
        raise UserError(f"{run} holds a {kind} policy; this reads {', '.join(kinds)} policies only")
    if warning := stale_frames(config["task"], config.get("render_revision"), f"the policy in {run} learned from"):
        print(warning, file=sys.stderr)
    policy = build_policy(dataclass_from_dict(PolicyConfig, config["model"]))
    load_checkpoint(path, policy)
    return policy.eval(), config


@dataclass
class Imitate:
    """Learn a policy from demonstrations: ACT-JEPA, ACT-style chunking, behaviour cloning, or an MLP on colour moments."""

    data: Path
    """Demonstrations: a dataset folder written by `jepa collect` (e.g. --policy expert)."""
    out: Path
    """Run folder; the policy goes to OUT/policy (rerun the same command to resume)."""
    policy: str = "act-jepa"
    """act-jepa (actions + future embeddings), act (action chunks alone), bc (one action) or
    moments (action chunks from the images' colour moments by an MLP: agents/moment_policy.py)."""
    model: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=lambda: dataclasses.replace(IMITATE_TRAIN))
    """Training. `jepa imitate --policy moments` starts from the moments policy's own defaults
    (`policy_defaults`: 20,000 steps of 256 at lr 1e-3 decaying to 0, weight decay 1e-4; width 256,
    two frames, a palette of 4 colours, no shift, 8 action hypotheses, no future-frame prediction),
    which any flag given overrides."""
    encoder: Path | None = None
    """Start from the encoder of a pretraining run (`jepa pretrain --out RUN`) instead of from scratch."""
    successful_only: bool = True
    """Learn only from demonstrations that reached their goal."""
    val_episodes: int = 0
    """Hold out the last N episodes of DATA and score the policy's losses on them (those of them
    it would otherwise learn from: successful ones, with --successful-only) every
    --train.val-every steps (TensorBoard `val/`, metrics.json): a waypoint loss that falls in
    training but not there is memorised, not read from the frames."""
    candidates: int = 1
    """Train this many policies, with training seeds --train.seed, --train.seed + 1, ..., each in a
    run folder of its own, OUT/candidates/seedS, and keep a copy of the one with the lowest total
    loss as OUT/policy: on the held-out demonstrations with --val-episodes, else on fixed windows
    of the demonstrations it learned from (OUT/candidates/selection.json lists every score).
    Whether a run learns to see a small object is a lottery of its seed, and both losses rank the
    runs (Meta-World push: a run that lost the puck or the goal fits its own demonstrations 1.7 to
    3.5 times worse; held-out demonstrations cost, inside the protocol's 50, about what the choice
    wins). PushT's seeds differ otherwise: neither loss tells its better ones (BENCHMARKS.md,
    sessions 13 and 19)."""
    trim: bool = True
    """Cut each demonstration where it first reaches its goal (experts then stand still: in PushT
    two thirds of the recorded actions are zeros after success)."""
    json: bool = False
    """Print one JSON object (final training metrics) on stdout."""

    def __post_init__(self):
        if self.candidates < 1:
            raise UserError(f"--candidates must be at least 1, got {self.candidates}")
        if self.candidates > 1 and "WORLD_SIZE" in os.environ:
            raise UserError("--candidates trains its runs one after another in one process: run it without torchrun")

    def __call__(self) -> dict:
        dataset = EpisodeDataset(self.data)
        if warning := stale_frames(dataset.task, dataset.render_revision, f"the dataset {self.data} holds"):
            print(warning, file=sys.stderr)
        episodes, held_out = demonstration_episodes(dataset, self.successful_only, self.val_episodes)
        model_cfg = dataclasses.replace(self.model, kind=self.policy, action_dim=dataset.actions.shape[1], proprio_dim=dataset.proprio.shape[1],
                                        encoder=dataclasses.replace(self.model.encoder, image_size=int(dataset.attrs["image_size"])))
        jepa = None
        if self.encoder is not None and self.policy == "moments":
            raise UserError("the moments policy has no image encoder to start from: drop --encoder")
        if self.encoder is not None:
            jepa, encoder_config = load_jepa(encoder_checkpoint(self.encoder))
            if encoder_config["task"] != dataset.task or jepa.cfg.encoder.image_size != model_cfg.encoder.image_size:
                raise UserError(f"the encoder in {self.encoder} was trained on {encoder_config['task']} at {jepa.cfg.encoder.image_size}px, "
                                f"the demonstrations are {dataset.task} at {model_cfg.encoder.image_size}px")
            if warning := stale_frames(dataset.task, encoder_config.get("render_revision"), f"the encoder in {self.encoder} learned from"):
                print(warning, file=sys.stderr)
            if jepa.cfg.encoder.tubelet != 1:
                raise UserError(f"policies encode single frames, but the encoder in {self.encoder} has tubelet {jepa.cfg.encoder.tubelet}")
            model_cfg = dataclasses.replace(model_cfg, encoder=jepa.cfg.encoder)
        fit = lambda cfg, folder: self._fit(dataset, episodes, held_out, model_cfg, jepa, cfg, folder)  # noqa: E731
        if self.candidates == 1:
            metrics = fit(self.train, self.out / POLICY_STAGE)
        else:
            metrics = self._select(fit)
        if not self.json:
            print(f"{self.policy} policy written to {self.out / POLICY_STAGE / FILENAME} from {len(episodes)} demonstrations"
                  + (f" (training seed {metrics['selected_seed']}, the best of {self.candidates})" if self.candidates > 1 else "")
                  + f"; action L1 {metrics.get('loss/action_l1', float('nan')):.4f}"
                  + (f" (held-out {metrics['val/action_l1']:.4f})" if "val/action_l1" in metrics else "") + f"; next: jepa policy-eval --run {self.out}")
        return metrics

    def _select(self, fit) -> dict:
        """Train the candidates (`fit(train config, policy folder) -> metrics`) and copy the one with
        the lowest total loss on the held-out demonstrations (`val/total`), or without them on its
        own (`fit/total`), to OUT/policy; returns its metrics and `selected_seed`. A changed choice
        leaves OUT/policy_eval stale: it is removed."""
        record, policy = self.out / CANDIDATES / "selection.json", self.out / POLICY_STAGE
        if policy.exists() and not record.exists():
            raise UserError(f"{policy} holds a policy trained without --candidates: choose a new --out")
        scores, prefix = {}, "val/" if self.val_episodes else "fit/"
        for seed in range(self.train.seed, self.train.seed + self.candidates):
            folder = self.out / CANDIDATES / f"seed{seed}" / POLICY_STAGE
            scores[seed] = fit(dataclasses.replace(self.train, seed=seed), folder)
            if prefix + "total" not in scores[seed]:
                raise UserError(f"{folder} finished without its metrics.json (its {prefix}total): delete {folder.parent} and rerun")
        best = lowest_total({seed: metrics[prefix + "total"] for seed, metrics in scores.items()})
        if record.exists() and json.loads(record.read_text())["selected_seed"] != best:
            shutil.rmtree(self.out / POLICY_EVAL_STAGE, ignore_errors=True)
        replace_folder(self.out / CANDIDATES / f"seed{best}" / POLICY_STAGE, policy)
        write_json(record, {"selected_seed": best, "chosen_by": prefix + "total", "candidates": {
            str(seed): {k: v for k, v in metrics.items() if k.startswith(prefix)} for seed, metrics in scores.items()}})
        return scores[best] | {"selected_seed": best}

    def _fit(self, dataset: EpisodeDataset, episodes: np.ndarray, held_out: np.ndarray, model_cfg: PolicyConfig, jepa, cfg: TrainConfig,
             folder: Path) -> dict:
        """Train one policy with training config `cfg` into `folder` (resuming what is there); its final metrics."""
        torch.manual_seed(cfg.seed)
        policy = build_policy(model_cfg)
        if jepa is not None:
            policy.encoder.load_state_dict(jepa.encoder.state_dict())
            for copy in ([policy.target["encoder"]] if policy.target is not None else []) + ([policy.goal_encoder["encoder"]] if policy.goal_encoder is not None else []):
                copy.load_state_dict(jepa.encoder.state_dict())
        lasts = last_actions(dataset, episodes, self.trim)
        learned = np.concatenate([np.arange(dataset.episode_starts[e], last + 1) for e, last in zip(episodes, lasts)])  # the frames windows start at
        proprio = dataset.proprio[learned]
        if model_cfg.square_symmetry:  # the moments of what training sees: every frame in every turn
            proprio = np.concatenate([turn_vectors(proprio, square_symmetry(dataset.task).proprio, *element) for element in ELEMENTS])
        proprio = torch.from_numpy(proprio)
        policy.proprio_mean.copy_(proprio.mean(0))
        policy.proprio_std.copy_(proprio.std(0, correction=0).clamp_min(1e-3))
        if policy.moments is not None:  # palette and statistics from frames as training sees them (every turn)
            frames = dataset.read_frames(learned[::MOMENT_FRAME_STRIDE])
            if model_cfg.square_symmetry:
                frames = np.concatenate([turn_images(frames, *element) for element in ELEMENTS])
            frames = torch.from_numpy(frames)
            if model_cfg.shift:  # (never for the moments policy: PolicyConfig rejects it) a shift moves what touches the border (PushT's walls) by far more than the unshifted frames vary
                frames = random_shift(frames[:, None], model_cfg.shift, torch.Generator().manual_seed(cfg.seed))[:, 0]
            policy.moments.fit(frames, seed=cfg.seed)
        features = None
        if model_cfg.kind == "moments":  # fixed features: computed once, in every turn training draws
            seen = np.concatenate([episodes, held_out])
            features = moment_features(dataset, seen, last_actions(dataset, seen, self.trim), policy.moments, model_cfg.square_symmetry)
            if model_cfg.goal_image:
                frame_features, goal_features, rows = features
                read = policy.choose_goal_moments(torch.from_numpy(goal_features[:, episodes]), torch.from_numpy(frame_features[:, rows[lasts + 1]]))  # [turns, N, F] each
                if not self.json:
                    print(f"goal image: {read} of its {policy.moments.size} moments follow where the demonstrations end and are read "
                          f"(--model.goal-min-correlation {model_cfg.goal_min_correlation})"
                          + ("; none: --model.no-goal-image would drop it" if not read else ""), file=sys.stderr)
        draw = demonstration_windows(dataset, episodes, lasts, model_cfg, features)

        def batches(step: int, rank: int, world: int) -> dict:
            return draw(np.random.default_rng([cfg.seed, step, rank, 2]), cfg.batch_size // world)

        train_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RESUME_RELEVANT}
        config = {"data": str(Path(self.data).resolve()), "task": dataset.task, "env_frame_skip": int(dataset.attrs["frame_skip"]), "render_revision": dataset.render_revision,
                  "demonstrator": str(dataset.attrs["policy"]), "demonstrations": len(episodes), "successful_only": self.successful_only, "val_episodes": self.val_episodes, "trim": self.trim, "demonstration_steps": int((lasts - dataset.episode_starts[episodes] + 1).sum()), "encoder_run": str(Path(self.encoder).resolve()) if self.encoder else None,
                  "model": dataclasses.asdict(model_cfg), "train": train_cfg}
        images = model_cfg.goal_image + model_cfg.history + len(model_cfg.future_offsets)
        validate = window_scorer(dataset, held_out, model_cfg, self.trim, self.train.seed, features) if len(held_out) else None  # one set of windows for every candidate
        metrics = Trainer(cfg, batches, policy.train(), folder, config, images, validate).fit()
        if self.candidates > 1 and not len(held_out) and metrics and "fit/total" not in metrics:  # scored once (a finished run has resumed its weights), kept with its metrics
            metrics |= {f"fit/{k}": v for k, v in window_scorer(dataset, episodes, model_cfg, self.trim, self.train.seed, features)(policy.eval()).items()}
            write_json(folder / "metrics.json", metrics)
        return metrics


@dataclass
class PolicyEval:
    """Run a learned policy on fresh episodes of its task and report success with its interval,
    beside the random-action floor and the demonstrator (the policy that recorded the
    demonstrations) on the same episodes."""

    run: Path
    """Run folder with a policy (`jepa imitate --out RUN`)."""
    task: str | None = None
    """Task (default: the one the policy learned; another one is an error)."""
    episodes: int = 50
    """Episodes per seed."""
    seeds: str = "0,1,2"
    """Comma-separated seeds; each draws different starts and goals."""
    steps: int = 0
    """Step budget per episode (0: the task's episode length); success is counted at any step."""
    execute: int | None = None
    """Actions executed per chunk (default: the policy's own)."""
    ensemble: float | None = None
    """Temporal-ensembling coefficient (default: the policy's own; > 0 queries every step)."""
    parallel: int = 25
    """Episodes run side by side (one batched policy call per step)."""
    baselines: bool = True
    """Also run random actions and the demonstrator on the same episodes."""
    videos: bool = True
    """Write each seed's first episode as mp4 (observation | goal)."""
    json: bool = False
    """Print {"success_rate", "ci95", "episodes", "seeds", "floor", "ceiling", ...}."""

    def __call__(self) -> dict:
        policy, config = load_policy(self.run)
        task = config["task"] if self.task is None else self.task
        if task != config["task"]:
            raise UserError(f"the policy in {self.run} learned {config['task']}, not {task}: imitate {task} demonstrations")
        seeds = parse_seeds(self.seeds)
        if min(self.episodes, self.parallel) < 1 or self.steps < 0:
            raise UserError("--episodes and --parallel must be positive and --steps not negative")
        policy.cfg = dataclasses.replace(policy.cfg, execute=policy.cfg.execute if self.execute is None else self.execute,
                                         ensemble=policy.cfg.ensemble if self.ensemble is None else self.ensemble)
        spec = task_spec(task)
        # runs from before the demonstrator was recorded all learned from the scripted expert
        demonstrator = demonstrator_spec(task, config.get("demonstrator", "expert"), frame_skip=config["env_frame_skip"]) if self.baselines else None
        budget = self.steps or spec.env_class.default_max_steps
        kwargs = {"image_size": policy.cfg.encoder.image_size, "frame_skip": config["env_frame_skip"]}
        out = Path(self.run) / POLICY_EVAL_STAGE
        out.mkdir(parents=True, exist_ok=True)
        mode = execution_mode(policy.cfg)
        outcome, shown = {"agent": [], "floor": [], "ceiling": [], "closest": []}, None
        with contextlib.ExitStack() as stack:
            envs = [spec.env_class(**kwargs) for _ in range(min(self.parallel, self.episodes))]
            blind = [spec.env_class(pixels=False, **kwargs) for _ in envs] if self.baselines else []  # random and expert need no pixels
            for env in envs + blind:
                stack.callback(env.close)
            bar = stack.enter_context(progress(total=len(seeds) * self.episodes, desc=f"policy-eval {task}", unit="episode"))
            for seed in seeds:
                resets = eval_reset_seeds(seed, self.episodes)
                for lo in range(0, self.episodes, len(envs)):
                    group, frames = resets[lo: lo + len(envs)], []
                    record = (lambda obs: frames.append(np.concatenate([obs["pixels"][0], obs["goal"][0]], 1))) if self.videos and lo == 0 else None
                    policy.reset()
                    success, closest = run_lockstep(envs[: len(group)], group, budget, lambda obs, _: policy.select_action(obs).numpy(), record)
                    outcome["agent"] += success.tolist()
                    outcome["closest"] += closest.tolist()
                    if frames:
                        shown = np.stack(frames)
                        write_video(out / f"{task}_{config['model']['kind']}_{mode}_seed{seed}.mp4", shown, fps=10, scale=2)
                    if self.baselines:  # one generator per episode: the same draws whatever --parallel is
                        for key, source, tag in (("floor", CollectSpec(task, "random"), 7), ("ceiling", demonstrator, 8)):
                            outcome[key] += actor_success(blind, group, budget, lambda i, env: make_policy(
                                source, env, np.random.default_rng([seed, lo + i, tag]))).tolist()
                    bar.update(len(group))
                    bar.set_postfix(success=f"{np.mean(outcome['agent']):.2f}")
        result = self._result(task, seeds, outcome, config, budget, policy.cfg)
        write_json(out / eval_result_name(task, mode, seeds, self.episodes, budget), result)
        self._log(out, result, shown)
        if not self.json:
            pct = lambda value: "n/a" if value is None else f"{value:.0%}"  # noqa: E731
            near = f" | closest approach, median: {result['closest_median']:.2f} tolerances" if result["closest_median"] is not None else ""
            print(f"{task} {config['model']['kind']}: success {pct(result['success_rate'])} [{pct(result['ci95'][0])}, {pct(result['ci95'][1])}] "
                  f"over {result['n']} episodes (success at any of {budget} steps){near} | random floor {pct(result['floor'])} | "
                  f"demonstrator {pct(result['ceiling'])}")
        return result

    @staticmethod
    def _log(out: Path, result: dict, frames: np.ndarray | None) -> None:
        """Scalars, and the last seed's first episode as a strip of every 10th frame (observation | goal)."""
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tb")) as writer:
            tag = f"{result['task']}_{result['policy']}"
            for key in ("success_rate", "floor", "ceiling"):
                if result[key] is not None:
                    writer.add_scalar(f"eval/{tag}/{key}", result[key], 0)
            if frames is not None:
                writer.add_image(f"eval/{tag}/observation_goal", np.concatenate(list(frames[::10]), 0), dataformats="HWC")

    def _result(self, task, seeds, outcome, config, budget, cfg: PolicyConfig) -> dict:
        success, ci = rate(outcome["agent"])
        floor, floor_ci = rate(outcome["floor"])
        ceiling, ceiling_ci = rate(outcome["ceiling"])
        return {"task": task, "policy": cfg.kind, "success_rate": success, "ci95": ci,
                "floor": floor, "floor_ci95": floor_ci, "ceiling": ceiling, "ceiling_ci95": ceiling_ci,
                "episodes": self.episodes, "seeds": seeds, "n": len(outcome["agent"]), "steps": budget,
                "execute": cfg.execute, "ensemble": cfg.ensemble,
                "demonstrations": config["demonstrations"], "closest_median": closest_median(outcome["closest"])}
