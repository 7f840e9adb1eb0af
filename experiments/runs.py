"""The run folder: where each stage of a run keeps its checkpoint, and how each is loaded back.

A run folder (`--out RUN`) holds one sub-folder per stage, named by the constants below:

    encoder/        jepa pretrain         checkpoint.safetensors, config.json, metrics.json, tb/
    world_model/    jepa train-wm         the same, and rollout_eval.json, rollout.mp4 (jepa rollout-eval)
    goal_distance/  jepa train-distance   the same
    plan_eval/      jepa plan-eval        <task>_<setting>_<planner>.json, videos, tb/
    policy/         jepa imitate          the same as encoder/
    candidates/     jepa imitate --candidates: one policy/ per training seed, selection.json
    policy_eval/    jepa policy-eval      results, videos
    expert/         jepa train-expert     policy.safetensors, expert.json, eval.json

Every checkpoint carries the config its run recorded (worldmodel/checkpoint.py). `load_stage`
reads it, builds the model from it, loads the weights and returns the model in eval mode, so a run
is loaded without any flag; each stage's loader below is built on it. A missing or foreign stage
is a one-line error naming the command that writes it (`WRITERS`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable, TypeVar

from torch import nn

from agents.policies import POLICIES, build_policy, config_from_record
from agents.policy import ChunkActor
from agents.sb3_expert import WEIGHTS, SB3Expert, StateTaskEnv, build_model
from envs import stale_frames, task_spec
from envs.collect import SB3_PREFIX, CollectSpec
from envs.dataset import EpisodeDataset
from infra.errors import UserError
from worldmodel.checkpoint import FILENAME, dataclass_from_dict, load_checkpoint, read_metadata
from worldmodel.goal_distance import GoalDistance, GoalDistanceConfig
from worldmodel.jepa import JEPA, JEPAConfig, build_jepa
from worldmodel.trainer import TrainConfig
from worldmodel.world_model import WorldModel, WorldModelConfig

ENCODER_STAGE, WORLD_MODEL_STAGE, DISTANCE_STAGE, PLAN_STAGE = "encoder", "world_model", "goal_distance", "plan_eval"
POLICY_STAGE, POLICY_EVAL_STAGE, CANDIDATES, EXPERT_STAGE = "policy", "policy_eval", "candidates", "expert"
PLAN_RECIPE = "plan_recipe.json"  # how plan-eval plans with the run unless flags say otherwise (written by quickstart)
WRITERS = {  # stage -> (what its checkpoint holds, the command that writes it)
    ENCODER_STAGE: ("pretrained encoder", "jepa pretrain --data DATA --out {run}"),
    WORLD_MODEL_STAGE: ("world model", "jepa train-wm --data DATA --encoder {run} --out {run}"),
    DISTANCE_STAGE: ("goal distance", "jepa train-distance --run {run}"),
    POLICY_STAGE: ("policy", "jepa imitate --data DEMOS --out {run}"),
    EXPERT_STAGE: ("SB3 expert", "jepa train-expert --task {task} --out {run}"),
}
NOT_RESUME_RELEVANT = ("device", "threads", "compile", "log_every", "checkpoint_every", "val_every")
"""Training options that may change between a run and its resumption (they are not recorded)."""

Model = TypeVar("Model", bound=nn.Module)


def recorded_training(cfg: TrainConfig) -> dict:
    """The training options a run records: those that must match for it to be resumed."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RESUME_RELEVANT}


def writer(run: Path, stage: str, task: str | None = None) -> tuple[str, str]:
    """(what a stage's checkpoint holds, the command line that writes it into `run`; for `task` if given)."""
    what, command = WRITERS[stage]
    return what, command.format(run=run, task=task or "TASK")


def stage_checkpoint(run: Path, stage: str, filename: str = FILENAME, task: str | None = None) -> Path:
    """RUN/stage/filename, or a one-line error naming the command that writes it (for `task` if given)."""
    path = Path(run) / stage / filename
    if not path.exists():
        what, command = writer(run, stage, task)
        raise UserError(f"{run} has no {what}: run `{command}` first")
    return path


def load_stage(run: Path, stage: str, build: Callable[[dict], Model], filename: str = FILENAME) -> tuple[Model, dict]:
    """(model in eval mode, recorded config) of a run's stage: the checkpoint RUN/stage/filename is
    found (`stage_checkpoint`), `build(config)` makes the module from the config its run recorded
    (and may refuse a foreign one with a UserError), and the weights are loaded into it."""
    path = stage_checkpoint(run, stage, filename)
    config = read_metadata(path)["config"]
    try:
        model = build(config)
    except KeyError as missing:
        what, command = writer(run, stage)
        raise UserError(f"{path} holds no {what} (its config records no {missing}): run `{command}`") from None
    load_checkpoint(path, model)
    return model.eval(), config


def env_frame_skip(config: dict) -> int | None:
    """Physics steps per env action of the data a world model was trained on (None for runs that
    predate recording it: the task's default, which every such run used)."""
    return config["env_frame_skip"] if "env_frame_skip" in config else None


def check_dataset(dataset: EpisodeDataset, config: dict, image_size: int, command: str) -> None:
    """One-line errors when a dataset does not match the task, image size or physics frame skip a
    model was trained on (`config`, its recorded config), or its task cannot be evaluated with a world model."""
    if not task_spec(dataset.task).env_class.settable_state:
        raise UserError(f"world models here are evaluated with simulator states; {dataset.task} is for imitation (jepa imitate)")
    if dataset.task != config["task"]:
        raise UserError(f"the model was trained on {config['task']} but {dataset.path} holds {dataset.task}: "
                        f"pass a {config['task']} dataset to `jepa {command}`")
    if int(dataset.attrs["image_size"]) != image_size:
        raise UserError(f"the model was trained on {image_size}px frames but {dataset.path} has {dataset.attrs['image_size']}px: "
                        f"collect with --image-size {image_size}")
    skip = env_frame_skip(config)
    if skip is not None and int(dataset.attrs["frame_skip"]) != skip:
        raise UserError(f"the model was trained on data with --frame-skip {skip} but {dataset.path} has {dataset.attrs['frame_skip']}: "
                        f"collect with --frame-skip {skip}")


# ---- encoder ---------------------------------------------------------------------------------
def encoder_checkpoint(run: Path) -> Path:
    """The encoder checkpoint of a run folder, or a one-line error naming the command that makes it."""
    return stage_checkpoint(run, ENCODER_STAGE)


def load_encoder(run: Path, frames: str | None = None, state_vectors: bool = False) -> tuple[JEPA, dict]:
    """The pretrained JEPA of a run folder, in eval mode, and its recorded config. With `frames`
    (the command that needs it) an encoder of anything but colour frames is refused: of depth
    point maps (3d-jepa) always, of state vectors (t-jepa) unless the command reads them (`state_vectors`)."""
    model, config = load_stage(run, ENCODER_STAGE, lambda config: build_jepa(dataclass_from_dict(JEPAConfig, config["model"])))
    reads = {"t-jepa": "state vectors (proprio, colour moments)", "3d-jepa": "depth point maps"}.get(model.cfg.objective)
    if frames and reads and not (state_vectors and model.cfg.objective == "t-jepa"):
        accepted = "an image encoder (`jepa pretrain --objective vicreg`, the default)" + (" or a t-jepa one" if state_vectors else "")
        raise UserError(f"{run} holds a {model.cfg.objective} encoder of {reads}, not of colour frames: `jepa {frames}` "
                        f"observes colour frames and proprio; give it {accepted}")
    return model, config


# ---- world model -----------------------------------------------------------------------------
def load_world_model(run: Path) -> tuple[WorldModel, dict]:
    """The trained world model of a run folder, in eval mode, and its recorded config."""
    return load_stage(run, WORLD_MODEL_STAGE, lambda config: WorldModel(dataclass_from_dict(WorldModelConfig, config["model"])))


def load_plan_recipe(run: Path) -> dict:
    """The run's recorded planning recipe ({"cost", "goal_proprio", "prior"}; {} where none is recorded)."""
    path = Path(run) / PLAN_RECIPE
    if not path.exists():
        return {}
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc}): delete it, or rerun `jepa quickstart`") from None
    if not isinstance(recipe, dict):
        raise UserError(f"{path} is not a planning recipe: delete it, or rerun `jepa quickstart`")
    return recipe


# ---- goal distance ---------------------------------------------------------------------------
def latent_space_id(world_model: WorldModel) -> str:
    """A fingerprint of a world model's latent space (encoder, frame latent and standardisation;
    not the predictor nor the cost's weights), so a goal distance is never used on latents it was not trained on."""
    digest = hashlib.sha1()
    for name, tensor in world_model.state_dict().items():
        if not name.startswith("predictor.") and name != "cost_weight":
            digest.update(name.encode() + tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_latent_space(config: dict, path: Path, run: Path, world_model: WorldModel) -> None:
    """A one-line error when the goal distance at `path` (recorded `config`) was trained on another
    latent space than `world_model`'s (or before latent spaces were fingerprinted)."""
    if config.get("latent_space") != latent_space_id(world_model):
        raise UserError(f"{path.parent} was not trained on the latents of {run}'s world model: "
                        f"delete it and run `jepa train-distance --run {run}`")


def load_policy(run: Path, family: type[ChunkActor] = ChunkActor) -> tuple[ChunkActor, dict]:
    """A trained policy of a run folder and its recorded config (a one-line error unless it is a `family`;
    a warning when its task is drawn otherwise now than in its demonstrations)."""

    def build(config: dict) -> ChunkActor:
        kind = config["model"]["kind"]
        if not issubclass(POLICIES.get(kind, (None, ChunkActor))[1], family):
            raise UserError(f"{run} holds a {kind} policy; this reads {', '.join(k for k, (_, c) in POLICIES.items() if issubclass(c, family))} policies only")
        if warning := stale_frames(config["task"], config.get("render_revision"), f"the policy in {run} learned from"):
            print(warning, file=sys.stderr)
        return build_policy(config_from_record(config["model"]))

    return load_stage(run, POLICY_STAGE, build)


def has_goal_distance(run: Path) -> bool:
    """Whether the run folder holds a trained goal distance (planning works without one)."""
    return (Path(run) / DISTANCE_STAGE / FILENAME).exists()


def load_goal_distance(run: Path, world_model: WorldModel) -> GoalDistance:
    """The run's trained goal distance in eval mode, without gradients, or a one-line error when it
    has none or it does not belong to `world_model`'s latent space."""
    def build(config: dict) -> GoalDistance:
        check_latent_space(config, Path(run) / DISTANCE_STAGE / FILENAME, run, world_model)
        return GoalDistance(dataclass_from_dict(GoalDistanceConfig, config["model"]), config["latent_size"])

    model, _ = load_stage(run, DISTANCE_STAGE, build)
    return model.requires_grad_(False)


# ---- SB3 expert ------------------------------------------------------------------------------
def expert_config(run: str | Path, task: str | None = None) -> dict:
    """The recorded config of the SB3 expert in a run folder, or a one-line error (none there, or trained on another task)."""
    config = read_metadata(stage_checkpoint(run, EXPERT_STAGE, WEIGHTS, task))["config"]
    if task is not None and config["task"] != task:
        raise UserError(f"the SB3 expert in {run} was trained on {config['task']}, not {task}")
    return config


def _expert_network(config: dict) -> nn.Module:
    """The SB3 policy network an expert's recorded config describes (untrained)."""
    env = StateTaskEnv(config["task"], config["env_frame_skip"])
    try:
        return build_model(config["algo"], env, tuple(config["net"])).policy
    finally:
        env.env.close()


@functools.lru_cache(maxsize=4)
def load_expert(run: str) -> tuple[nn.Module, dict]:
    """(SB3 policy in eval mode, recorded config) of `jepa train-expert --out RUN` (an absolute
    path: cached, as collection builds one actor per episode), without unpickling. Clear the cache
    (`load_expert.cache_clear()`) after writing an expert."""
    return load_stage(run, EXPERT_STAGE, _expert_network, WEIGHTS)


def sb3_expert(env, run: str | Path) -> SB3Expert:
    """The SB3 expert of run folder `run` acting in `env`: the demonstrator that `--policy sb3:RUN` names."""
    policy, config = load_expert(str(Path(run).resolve()))
    return SB3Expert(env, policy, config, run)


def demonstrator_spec(task: str, policy: str, **options) -> CollectSpec:
    """The collection spec of `policy` on `task`; for sb3:RUN the run folder is checked now and
    recorded as an absolute path, and the SB3 expert is attached as the spec's factory."""
    if not policy.startswith(SB3_PREFIX):
        return CollectSpec(task=task, policy=policy, **options)
    run = Path(policy[len(SB3_PREFIX):]).resolve()
    expert_config(run, task)
    return CollectSpec(task=task, policy=f"{SB3_PREFIX}{run}", factory=functools.partial(sb3_expert, run=run), **options)
