"""`jepa imitate`: learn a policy from demonstrations, one subcommand per policy (`jepa imitate
--policy NAME` is `jepa imitate NAME`), each family with its own config and defaults: the
transformer family (act-jepa, act, bc: agents/chunk_policy.py) and moments
(agents/moment_policy.py). The policy prepares itself from the demonstrations and declares the
windows it trains on (agents/demonstrations.py); this command only wires them to the trainer."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import numpy as np
import torch
import tyro

from agents.chunk_policy import KINDS as CHUNK_KINDS
from agents.chunk_policy import ChunkPolicyConfig
from agents.demonstrations import Demonstrations
from agents.moment_policy import MomentPolicyConfig
from agents.policies import POLICIES, build_policy
from agents.policy import PolicyConfig, Vote
from envs import stale_frames, task_spec
from envs.dataset import EpisodeDataset
from experiments.runs import CANDIDATES, POLICY_EVAL_STAGE, POLICY_STAGE, load_encoder, load_policy, recorded_training
from infra.errors import UserError
from infra.files import replace_folder, write_json
from worldmodel.checkpoint import FILENAME, save_checkpoint
from worldmodel.trainer import TrainConfig, Trainer

TRANSFORMER_TRAIN = TrainConfig(steps=3000, batch_size=64, lr=5e-4, checkpoint_every=500)
MOMENTS_TRAIN = dataclasses.replace(TRANSFORMER_TRAIN, steps=20_000, batch_size=256, lr=1e-3, min_lr_ratio=0.0, weight_decay=1e-4)
"""An MLP step on cached features costs about a fifteenth of a transformer policy's step."""


def lowest_total(totals: dict[int, float]) -> int:
    """The training seed `--candidates` keeps: the lowest finite total (non-finite ones last), ties to the lowest seed."""
    return min(sorted(totals), key=lambda seed: (not math.isfinite(totals[seed]), totals[seed]))


@dataclass
class Imitate:
    """Learn a policy from demonstrations into OUT/policy."""

    data: Path
    """Demonstrations: a dataset folder written by `jepa collect` (e.g. --policy expert)."""
    out: Path
    """Run folder; the policy goes to OUT/policy (rerun the same command to resume)."""
    successful_only: bool = True
    """Learn only from demonstrations that reached their goal."""
    val_episodes: int = 0
    """Hold out the last N episodes of DATA and score the policy's losses on them (those of them
    it would otherwise learn from: successful ones, with --successful-only) every
    --train.val-every steps (TensorBoard `val/`, metrics.json): a loss that falls in training but
    not there is memorised, not read from the frames."""
    candidates: int = 1
    """Train this many policies, with training seeds --train.seed, --train.seed + 1, ..., each in
    OUT/candidates/seedS, and keep a copy of the one with the lowest total loss as OUT/policy: on
    the held-out demonstrations with --val-episodes, else on fixed windows of the demonstrations it
    learned from (OUT/candidates/selection.json lists every score). Whether a run learns to see a
    small object can be a lottery of its seed, and a run that did not fits even its own
    demonstrations worse."""
    vote: bool = False
    """With --candidates K: act by the vote of the K policies (agents/policy.py `Vote`: the medoid of
    their proposed chunks) instead of keeping the one with the lowest loss."""
    trim: bool = True
    """Cut each demonstration where it first reaches its goal (experts then stand still)."""
    json: bool = False
    """Print one JSON object (final training metrics) on stdout."""
    model: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.candidates < 1:
            raise UserError(f"--candidates must be at least 1, got {self.candidates}")

    def pretrained_encoder(self, dataset: EpisodeDataset, model_cfg: PolicyConfig) -> tuple[PolicyConfig, torch.nn.Module | None]:
        """The pretrained image encoder the policy starts from (None: from scratch), and the config that fits it."""
        return model_cfg, None

    @property
    def encoder_run(self) -> str | None:
        """The pretraining run the policy's encoder starts from, as the run records it."""
        return None

    def __call__(self) -> dict:
        if self.candidates > 1 and "WORLD_SIZE" in os.environ:
            raise UserError(f"--candidates {self.candidates} trains its runs one after another in one process: run it without torchrun, "
                            "or with --candidates 1")
        dataset = EpisodeDataset(self.data)
        if warning := stale_frames(dataset.task, dataset.render_revision, f"the dataset {self.data} holds"):
            print(warning, file=sys.stderr)
        demos = Demonstrations(dataset, self.successful_only, self.val_episodes, self.trim)
        model_cfg = self.model.for_task(task_spec(dataset.task).env_class).for_data(dataset.actions.shape[1], dataset.proprio.shape[1], int(dataset.attrs["image_size"]))
        model_cfg, encoder = self.pretrained_encoder(dataset, model_cfg)
        fit = lambda cfg, folder: self._fit(demos, model_cfg, encoder, cfg, folder)  # noqa: E731
        metrics = fit(self.train, self.out / POLICY_STAGE) if self.candidates == 1 else self._select(fit)
        if not self.json:
            print(f"{model_cfg.kind} policy written to {self.out / POLICY_STAGE / FILENAME} from {len(demos.episodes)} demonstrations"
                  + (f" (the vote of training seeds {', '.join(map(str, metrics['voters']))})" if "voters" in metrics else
                     f" (training seed {metrics['selected_seed']}, the best of {self.candidates})" if self.candidates > 1 else "")
                  + f"; action L1 {metrics.get('loss/action_l1', float('nan')):.4f}"
                  + (f" (held-out {metrics['val/action_l1']:.4f})" if "val/action_l1" in metrics else "") + f"; next: jepa policy-eval --run {self.out}")
        return metrics

    def _select(self, fit) -> dict:
        """Train the candidates (`fit(train config, policy folder) -> metrics`); with --vote write
        their vote to OUT/policy, else copy the one with the lowest total loss on the held-out
        demonstrations (`val/total`), or without them on its own (`fit/total`); returns its metrics
        and `selected_seed` (or `voters`). A changed choice leaves OUT/policy_eval stale: it is removed."""
        record, policy = self.out / CANDIDATES / "selection.json", self.out / POLICY_STAGE
        if policy.exists() and not record.exists():
            raise UserError(f"{policy} holds a policy trained without --candidates: choose a new --out")
        scores, prefix = {}, "val/" if self.val_episodes else "fit/"
        for seed in range(self.train.seed, self.train.seed + self.candidates):
            folder = self.out / CANDIDATES / f"seed{seed}" / POLICY_STAGE
            scores[seed] = fit(dataclasses.replace(self.train, seed=seed), folder)
            if prefix + "total" not in scores[seed]:
                raise UserError(f"{folder} finished without its metrics.json (its {prefix}total): delete {folder.parent} and rerun")
        if self.vote:
            return self._vote(scores)
        best = lowest_total({seed: metrics[prefix + "total"] for seed, metrics in scores.items()})
        if record.exists() and json.loads(record.read_text()).get("selected_seed") != best:
            shutil.rmtree(self.out / POLICY_EVAL_STAGE, ignore_errors=True)
        replace_folder(self.out / CANDIDATES / f"seed{best}" / POLICY_STAGE, policy)
        write_json(record, {"selected_seed": best, "chosen_by": prefix + "total", "candidates": {
            str(seed): {k: v for k, v in metrics.items() if k.startswith(prefix)} for seed, metrics in scores.items()}})
        return scores[best] | {"selected_seed": best}

    def _vote(self, scores: dict[int, dict]) -> dict:
        """Write the vote of the trained candidates (their metrics by training seed) to OUT/policy;
        returns their mean losses and `voters`."""
        loaded = [load_policy(self.out / CANDIDATES / f"seed{seed}") for seed in scores]
        vote = Vote([policy for policy, _ in loaded])
        config = loaded[0][1] | {"model": dataclasses.asdict(vote.cfg), "voters": list(scores)}
        metrics = {key: float(np.mean([m[key] for m in scores.values()])) for key in scores[min(scores)] if key.startswith(("loss/", "fit/", "val/"))}
        record = self.out / CANDIDATES / "selection.json"
        if record.exists() and json.loads(record.read_text()).get("voters") != list(scores):
            shutil.rmtree(self.out / POLICY_EVAL_STAGE, ignore_errors=True)
        staging = self.out / CANDIDATES / "vote" / POLICY_STAGE
        staging.mkdir(parents=True, exist_ok=True)
        save_checkpoint(staging / FILENAME, vote, None, self.train.steps, config)
        write_json(staging / "config.json", config)
        write_json(staging / "metrics.json", metrics)
        replace_folder(staging, self.out / POLICY_STAGE)
        shutil.rmtree(staging.parent)  # the staged copy: OUT/policy holds it now
        write_json(record, {"voters": list(scores), "candidates": {
            str(seed): {k: v for k, v in m.items() if k.startswith(("fit/", "val/"))} for seed, m in scores.items()}})
        return metrics | {"voters": list(scores)}

    def _fit(self, demos: Demonstrations, model_cfg: PolicyConfig, encoder: torch.nn.Module | None, cfg: TrainConfig, folder: Path) -> dict:
        """Train one policy with training config `cfg` into `folder` (resuming what is there); its final metrics."""
        torch.manual_seed(cfg.seed)
        policy = build_policy(model_cfg)
        if encoder is not None:
            policy.start_from(encoder)
        spec, summary = policy.prepare(demos, cfg.seed)
        if summary and not self.json:
            print(summary, file=sys.stderr)
        draw = demos.windows(spec)

        def batches(step: int, rank: int, world: int) -> dict:
            return draw(np.random.default_rng([cfg.seed, step, rank, 2]), cfg.batch_size // world)

        dataset = demos.dataset
        config = {"data": str(Path(self.data).resolve()), "task": dataset.task, "env_frame_skip": int(dataset.attrs["frame_skip"]),
                  "render_revision": dataset.render_revision, "demonstrator": str(dataset.attrs["policy"]), "demonstrations": len(demos.episodes),
                  "successful_only": self.successful_only, "val_episodes": self.val_episodes, "trim": self.trim, "demonstration_steps": demos.steps,
                  "encoder_run": self.encoder_run,
                  "model": dataclasses.asdict(model_cfg), "train": recorded_training(cfg)}
        images = model_cfg.goal_image + model_cfg.history + len(model_cfg.future_offsets)
        validate = demos.scorer(spec, self.train.seed, held_out=True) if len(demos.held_out) else None  # one set of windows for every candidate
        metrics = Trainer(cfg, batches, policy.train(), folder, config, images, validate).fit()
        if self.candidates > 1 and not len(demos.held_out) and metrics and "fit/total" not in metrics:  # scored once (a finished run has resumed its weights), kept with its metrics
            metrics |= {f"fit/{k}": v for k, v in demos.scorer(spec, self.train.seed, held_out=False)(policy.eval()).items()}
            write_json(folder / "metrics.json", metrics)
        return metrics


@dataclass
class ImitateTransformer(Imitate):
    """Learn a transformer policy (act-jepa, act or bc) from demonstrations into OUT/policy."""

    model: ChunkPolicyConfig = field(default_factory=ChunkPolicyConfig)
    train: TrainConfig = field(default_factory=lambda: dataclasses.replace(TRANSFORMER_TRAIN))
    encoder: Path | None = None
    """Start from the encoder of a pretraining run (`jepa pretrain --out RUN`) instead of from scratch."""

    def pretrained_encoder(self, dataset: EpisodeDataset, model_cfg: ChunkPolicyConfig) -> tuple[ChunkPolicyConfig, torch.nn.Module | None]:
        if self.encoder is None:
            return model_cfg, None
        jepa, encoder_config = load_encoder(self.encoder, frames="imitate")
        if encoder_config["task"] != dataset.task or jepa.cfg.encoder.image_size != model_cfg.image_size:
            raise UserError(f"the encoder in {self.encoder} was trained on {encoder_config['task']} at {jepa.cfg.encoder.image_size}px, "
                            f"the demonstrations are {dataset.task} at {model_cfg.image_size}px")
        if warning := stale_frames(dataset.task, encoder_config.get("render_revision"), f"the encoder in {self.encoder} learned from"):
            print(warning, file=sys.stderr)
        if jepa.cfg.encoder.tubelet != 1:
            raise UserError(f"policies encode single frames, but the encoder in {self.encoder} has tubelet {jepa.cfg.encoder.tubelet}")
        return dataclasses.replace(model_cfg, encoder=jepa.cfg.encoder), jepa.encoder

    @property
    def encoder_run(self) -> str | None:
        return str(Path(self.encoder).resolve()) if self.encoder else None


@dataclass
class ImitateMoments(Imitate):
    """Learn the moments policy (an MLP on the images' colour moments) from demonstrations into OUT/policy."""

    candidates: int = 3
    """Train this many policies, with training seeds --train.seed, --train.seed + 1, ..., each in
    OUT/candidates/seedS; with --vote (the default) OUT/policy acts by their vote, else it is the
    one with the lowest total loss. A run costs minutes, and which basin it lands in is a lottery of
    its seed (Meta-World push: 55-100% by training seed); no loss on the demonstrations ranks the
    runs on every task, and the vote outvotes a poor run."""
    vote: bool = True
    """Act by the vote of the --candidates policies (agents/policy.py `Vote`: the medoid of their
    proposed chunks); --no-vote keeps the one with the lowest total loss."""
    model: MomentPolicyConfig = field(default_factory=MomentPolicyConfig)
    train: TrainConfig = field(default_factory=lambda: dataclasses.replace(MOMENTS_TRAIN))


DESCRIPTIONS = {"act-jepa": "ACT-JEPA: action chunks and the future frames' embeddings (EMA target), one transformer.",
                "act": "ACT-style action chunks, the same transformer without the JEPA term.",
                "bc": "Behaviour cloning: one action per query, the same transformer.",
                "moments": "An MLP on the images' colour moments and the proprio, with action hypotheses."}
COMMANDS = {**{kind: ImitateTransformer(data=tyro.MISSING, out=tyro.MISSING, model=ChunkPolicyConfig(kind=kind)) for kind in CHUNK_KINDS},
            "moments": ImitateMoments(data=tyro.MISSING, out=tyro.MISSING)}
assert set(COMMANDS) == set(POLICIES) == set(DESCRIPTIONS)
IMITATE = Union[tuple(Annotated[type(default), tyro.conf.subcommand(name, default=default, description=DESCRIPTIONS[name], prefix_name=False)]
                      for name, default in COMMANDS.items())]  # noqa: UP007  (tyro reads the subcommands from a Union)


def imitate(policy: Annotated[IMITATE, tyro.conf.arg(name="")]) -> Imitate:
    """Learn a policy from demonstrations: `jepa imitate --policy NAME` with act-jepa, act, bc or
    moments, each with its own config and defaults (`jepa imitate NAME --help`)."""
    return policy


def policy_as_subcommand(argv: list[str]) -> list[str]:
    """`jepa imitate --policy NAME ...` (or `--policy=NAME`) as tyro's `jepa imitate NAME ...`; act-jepa when no policy is named."""
    rest, name = list(argv), None
    for i, arg in enumerate(rest):
        if arg == "--policy" and i + 1 < len(rest):
            name = rest.pop(i + 1)
            rest.pop(i)
            break
        if arg.startswith("--policy="):
            name = rest.pop(i).split("=", 1)[1]
            break
    if rest[:1] and rest[0] in POLICIES:
        return rest if name in (None, rest[0]) else _unknown(name, also=rest[0])
    if name is None and any(arg in ("-h", "--help") for arg in rest):
        return rest  # the list of policies
    if name is not None and name not in POLICIES:
        return _unknown(name)
    return [name or "act-jepa", *rest]


def _unknown(name: str, also: str | None = None) -> list[str]:
    what = f"--policy {name} contradicts the subcommand {also}" if also else f"unknown policy {name!r}"
    raise UserError(f"{what}: --policy must be one of {', '.join(POLICIES)}")
