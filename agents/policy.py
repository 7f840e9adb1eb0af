"""The one policy interface of the project, and what every policy shares.

A policy maps batched observations to a chunk of k actions (action chunking: ACT, Zhao et al.
2023) and runs it: the first `execute` actions of each chunk, or (`ensemble` > 0) a query every
step whose overlapping chunks are averaged with weights exp(-ensemble * i), i = 0 for the oldest
chunk still covering the step (ACT's temporal ensembling). With `modes` > 1 it predicts several
hypotheses of each chunk, trains the closest (relaxed winner-takes-all, Rupprecht et al. 2017)
and executes the most likely: for demonstrators that choose between distinct moves, whose
average is none of them.

Every policy (`ChunkActor`) has the lerobot-like surface `reset()`, `select_action(obs)`,
`predict_action_chunk(obs)`, `forward(batch) -> (loss, metrics)`, and two methods for
`jepa imitate`: `prepare(demos, seed)` fits what the policy takes from the demonstrations before
training (the proprio normaliser, and per family a palette, a goal-feature choice, a feature
cache) and returns the `WindowSpec` of the batches it trains on. The families: agents/chunk_policy.py
(act-jepa, act, bc) and agents/moment_policy.py (moments); agents/policies.py registers them.

    obs = {"pixels": uint8 [B, H, W, 3], "proprio": [B, P], "goal": uint8 [B, H, W, 3]}
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
import tyro
from torch import nn

from agents.demonstrations import Demonstrations, WindowSpec
from envs import TaskEnv
from infra.errors import UserError

WTA_RELAX = 0.05  # share of the action loss spread over all hypotheses (modes > 1), so none is left untrained
MODE_WEIGHT = 0.1  # weight of the cross-entropy that learns which hypothesis wins


@dataclass
class PolicyConfig:
    """What every policy family's config holds: the chunk, the observations read, and how a chunk runs."""

    kind: Annotated[str, tyro.conf.Suppress] = ""
    """The policy's name in agents/policies.POLICIES (`jepa imitate --policy` sets it)."""
    chunk: int = 8
    """Actions predicted per query (bc: 1)."""
    history: int = 1
    """Observation frames the policy sees (the current one and history - 1 before it)."""
    goal_image: bool = True
    """Read the goal image. Off: for tasks that draw their goal in every frame (Meta-World's
    marker), where it adds nothing the frames lack."""
    modes: int = 1
    """Action-chunk hypotheses per query (above 1: relaxed winner-takes-all, and the most likely
    is executed), for demonstrators that choose between distinct moves."""
    jepa_weight: float = 0.0
    """Weight of the loss on the predicted embeddings of the future frames t+stride, ..., t+chunk
    (ACT-JEPA's objective; 0: no future prediction)."""
    jepa_stride: int = 2
    """Future frames predicted: t+stride, t+2*stride, ..., t+chunk."""
    square_symmetry: bool = True
    """Train on each window turned by one of the square's eight symmetries, drawn at random (quarter
    turns and mirror images of images, proprio and actions: envs/symmetry.py), where the task
    declares them (PushT; `for_task` turns it off for the others)."""
    execute: int = 4
    """Actions of each chunk executed before the next query (ignored when ensemble > 0)."""
    ensemble: float = 0.0
    """Temporal-ensembling coefficient (> 0: query every step, ACT uses 0.01)."""
    action_dim: Annotated[int, tyro.conf.Suppress] = 0
    proprio_dim: Annotated[int, tyro.conf.Suppress] = 0
    members: Annotated[int, tyro.conf.Suppress] = 1
    """Policies of this config, trained apart, whose vote acts (`Vote`; `jepa imitate --vote` sets it)."""

    TASK_FIELDS: ClassVar[dict[str, object]] = {}
    """Fields a task's recipe may set (`envs.TaskEnv.imitation_recipe`), None until `for_task`, and
    the value each takes where the task's recipe does not set it."""

    def __post_init__(self):
        if min(v for v in (self.chunk, self.history, self.jepa_stride, self.modes) if v is not None) < 1:
            raise UserError("chunk, history, modes and jepa-stride must be positive")
        if self.ensemble < 0:
            raise UserError(f"ensemble must not be negative, got {self.ensemble}")
        if self.jepa_weight is not None and self.jepa_weight < 0:
            raise UserError(f"jepa-weight is a loss's weight, 0 or more (0: no future prediction), got {self.jepa_weight}")
        if self.predicts_future and self.jepa_stride > self.chunk:
            raise UserError(f"the policy predicts frames t+stride..t+chunk: jepa-stride {self.jepa_stride} exceeds the chunk {self.chunk}")
        if self.kind != "bc" and not 1 <= self.execute <= self.chunk:
            raise UserError(f"execute (actions run per chunk) must be from 1 to the chunk ({self.chunk}), got {self.execute}")

    def for_task(self, task: type[TaskEnv]) -> PolicyConfig:
        """This config fitted to a task: the square's symmetries only where the task declares them,
        and every field left to the task (None) set from the task's recipe for this policy, else
        from its fallback (TASK_FIELDS). A value given on the command line is kept."""
        recipe = task.imitation_recipe.get(self.kind, {})
        if unknown := set(recipe) - set(self.TASK_FIELDS):
            raise ValueError(f"{task.__name__}'s recipe for {self.kind} sets {sorted(unknown)}, which that policy leaves to no task")
        filled = {name: recipe.get(name, fallback) for name, fallback in self.TASK_FIELDS.items() if getattr(self, name) is None}
        return dataclasses.replace(self, square_symmetry=self.square_symmetry and task.square_symmetry is not None, **filled)

    @property
    def left_to_task(self) -> list[str]:
        """Fields still None, which `for_task` sets."""
        return [name for name in self.TASK_FIELDS if getattr(self, name) is None]

    @property
    def image_size(self) -> int:
        """Side of the square images the policy reads."""
        raise NotImplementedError

    def for_data(self, action_dim: int, proprio_dim: int, image_size: int) -> PolicyConfig:
        """This config sized for demonstrations of these action and proprio dims and image size."""
        raise NotImplementedError

    @property
    def predicts_future(self) -> bool:
        """Whether the policy predicts future frames' embeddings (jepa_weight > 0)."""
        return bool(self.jepa_weight)

    @property
    def horizon(self) -> int:
        """Actions predicted per query."""
        return 1 if self.kind == "bc" else self.chunk

    @property
    def future_offsets(self) -> list[int]:
        """Steps ahead of the future frames whose embeddings are predicted (empty without future prediction)."""
        return list(range(self.jepa_stride, self.chunk + 1, self.jepa_stride)) if self.predicts_future else []

    @property
    def execution_mode(self) -> str:
        """How the policy runs its chunks, as policy-eval names its results: ensembleE or executeN."""
        return f"ensemble{self.ensemble:g}" if self.ensemble > 0 else f"execute{self.execute}"


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the valid rows: predicted, target [B, n, D], valid bool [B, n]."""
    weight = valid[..., None].to(predicted)
    return ((predicted - target).abs() * weight).sum() / (weight.sum() * predicted.shape[-1]).clamp_min(1)


def chunk_loss(hypotheses: torch.Tensor, logits: torch.Tensor | None, actions: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L1 of each sample's closest hypothesis: hypotheses [B, M, k, A], logits [B, M] (None when M = 1),
    actions [B, k, A], valid bool [B, k]. With M > 1, relaxed winner-takes-all (every hypothesis keeps
    WTA_RELAX of the loss, so none is left untrained) plus the cross-entropy of which one wins."""
    weight = valid[:, None, :, None].to(hypotheses)  # [B, 1, k, 1]
    errors = ((hypotheses - actions[:, None]).abs() * weight).sum((2, 3))  # [B, M]
    best = errors.argmin(1)  # [B]
    per_entry = (weight.sum() * hypotheses.shape[-1]).clamp_min(1)
    action_loss = errors.gather(1, best[:, None]).sum() / per_entry
    if logits is None:
        return action_loss, {"loss/action_l1": action_loss.detach()}
    mode_loss = F.cross_entropy(logits, best)
    loss = (1 - WTA_RELAX) * action_loss + WTA_RELAX * errors.mean(1).sum() / per_entry + MODE_WEIGHT * mode_loss
    return loss, {"loss/action_l1": action_loss.detach(), "loss/mode_ce": mode_loss.detach()}


def most_likely(hypotheses: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
    """Hypotheses [B, M, k, A] and logits [B, M] (None: one hypothesis) -> the most likely chunk [B, k, A]."""
    return hypotheses[:, 0] if logits is None else hypotheses[torch.arange(len(logits)), logits.argmax(1)]


class ChunkActor(nn.Module):
    """What every policy shares: the proprio's normalisation, the observation history, the
    execution of the chunks `predict_action_chunk` returns (see the module docstring), and the
    preparation from demonstrations that every family starts from."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        if not cfg.kind or not cfg.action_dim:
            raise UserError("the policy needs its kind and action_dim (jepa imitate sets both: --policy, the demonstrations)")
        if cfg.left_to_task:
            raise UserError(f"the policy's config leaves {', '.join(cfg.left_to_task)} to its task: fit it with PolicyConfig.for_task")
        self.cfg = cfg
        self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.proprio_mean.device

    def normalise(self, proprio: torch.Tensor) -> torch.Tensor:
        """Proprio [..., P] in the demonstrations' units -> zero mean, unit std (the inputs' and the waypoints' scale)."""
        return (proprio - self.proprio_mean) / self.proprio_std

    def window_spec(self) -> WindowSpec:
        """What each training window must hold for this policy (agents/demonstrations.py draws them)."""
        cfg = self.cfg
        return WindowSpec(history=cfg.history, horizon=cfg.horizon, future_offsets=tuple(cfg.future_offsets), symmetric=cfg.square_symmetry)

    def windows_on(self, demos: Demonstrations) -> WindowSpec:
        """The spec of the windows this prepared policy reads from `demos` (a fixed encoder's
        features cached where it has one): what its losses are scored on."""
        return self.window_spec()

    def prepare(self, demos: Demonstrations, seed: int) -> tuple[WindowSpec, str]:
        """Fit what the policy takes from the demonstrations before training (here the proprio's
        normaliser, on every frame a window starts at, in every turn training draws); returns the
        spec of its training windows and a line on what was fitted ("" if nothing to say)."""
        proprio = torch.from_numpy(demos.training_proprio(self.cfg.square_symmetry))
        self.proprio_mean.copy_(proprio.mean(0))
        self.proprio_std.copy_(proprio.std(0, correction=0).clamp_min(1e-3))
        return self.window_spec(), ""

    def reset(self) -> None:
        """Forget the observation history and queued actions (call at each episode start)."""
        self._frames: deque = deque(maxlen=self.cfg.history)
        self._chunks: deque = deque(maxlen=self.cfg.horizon)  # (ensemble) recent chunks, newest last
        self._queue: torch.Tensor | None = None  # [B, n, A] actions left of the current chunk

    def observe(self, obs: dict) -> None:
        """Add the observation's frames [B, H, W, 3] to the history."""
        pixels = torch.as_tensor(obs["pixels"], device=self.device)
        while len(self._frames) < self.cfg.history - 1:  # an episode's first frame stands in for the past
            self._frames.append(pixels)
        self._frames.append(pixels)

    def _inputs(self, obs: dict, observe: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched observations -> (frames uint8 [B, h, H, W, 3], goal uint8 [B, H, W, 3], proprio [B, P]) on
        the policy's device (adds `obs` to the history unless told not to)."""
        if observe:
            self.observe(obs)
        frames = torch.stack(list(self._frames), 1)
        goal = torch.as_tensor(obs["goal"], device=self.device)
        return frames, goal, torch.as_tensor(obs["proprio"], dtype=torch.float32, device=self.device)

    def predict_action_hypotheses(self, obs: dict, observe: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(action chunks [B, M, k, A] in [-1, 1], their logits [B, M] or None for M = 1) for batched
        observations (adds `obs` to the history unless told not to)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict, observe: bool = True) -> torch.Tensor:
        """The most likely action chunk [B, k, A] in [-1, 1] for batched observations (adds `obs` to the history unless told not to)."""
        return most_likely(*self.predict_action_hypotheses(obs, observe))

    @torch.no_grad()
    def select_action(self, obs: dict) -> torch.Tensor:
        """The action [B, A] to take now (chunks executed `execute` at a time, or temporally ensembled)."""
        cfg = self.cfg
        self.observe(obs)
        if cfg.ensemble > 0:
            self._chunks.append(self.predict_action_chunk(obs, observe=False))
            ages = len(self._chunks)
            # chunk j (0 oldest) was predicted ages-1-j steps ago: its action for now is at that index
            actions = torch.stack([c[:, ages - 1 - j] for j, c in enumerate(self._chunks)], 0)  # [n, B, A]
            weights = torch.exp(-cfg.ensemble * torch.arange(ages, dtype=torch.float32, device=actions.device))
            return (weights[:, None, None] * actions).sum(0) / weights.sum()
        if self._queue is None or self._queue.shape[1] == 0:
            self._queue = self.predict_action_chunk(obs, observe=False)[:, : min(cfg.execute, cfg.horizon)]
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action

    def with_execution(self, execute: int | None, ensemble: float | None) -> None:
        """Run chunks `execute` actions at a time, or temporally ensembled (None keeps the trained setting)."""
        self.cfg = dataclasses.replace(self.cfg, execute=self.cfg.execute if execute is None else execute,
                                       ensemble=self.cfg.ensemble if ensemble is None else ensemble)
        self.reset()


class Vote(ChunkActor):
    """Several policies of one config trained apart (training seeds), acting as one: at each query
    every member proposes its most likely chunk and the medoid is executed, the proposal with the
    least L1 distance to the others (bagging's vote, Breiman 1996, for continuous actions: a member
    trained into a poor basin is outvoted where the others agree, and no average of two distinct
    moves is ever executed). Each member keeps its own observation history."""

    def __init__(self, members: list[ChunkActor]):
        super().__init__(dataclasses.replace(members[0].cfg, members=len(members)))
        self.members = nn.ModuleList(members)

    def reset(self) -> None:
        super().reset()
        for member in getattr(self, "members", []):  # the base class resets before the members exist
            member.reset()

    def observe(self, obs: dict) -> None:
        for member in self.members:
            member.observe(obs)

    def windows_on(self, demos: Demonstrations) -> WindowSpec:
        raise UserError("a vote has no loss of its own: score its members (RUN/candidates/seedS)")

    @torch.no_grad()
    def predict_action_hypotheses(self, obs: dict, observe: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's hypotheses [B, K * M, k, A] in the order of the logits [B, K * M]: the
        members' most likely chunks first, the medoid (acted on) ahead of them, then the members'
        other hypotheses, so a planner's prior (`jepa plan-eval --prior`) gets them all."""
        if observe:
            self.observe(obs)
        ranked = []  # per member [B, M, k, A], its most likely first
        for member in self.members:
            hypotheses, logits = member.predict_action_hypotheses(obs, observe=False)
            ranked.append(hypotheses if logits is None else hypotheses[torch.arange(len(logits))[:, None], logits.argsort(dim=1, descending=True, stable=True)])
        tops = torch.stack([hypotheses[:, 0] for hypotheses in ranked], 1)  # [B, K, k, A]
        spread = (tops[:, :, None] - tops[:, None]).abs().sum((-1, -2)).sum(2)  # [B, K]: each proposal's L1 distance to all
        tops = tops[torch.arange(len(tops))[:, None], spread.argsort(dim=1, stable=True)]
        hypotheses = torch.cat([tops, *(hypotheses[:, 1:] for hypotheses in ranked)], 1)  # [B, K * M, k, A]
        return hypotheses, -torch.arange(hypotheses.shape[1], dtype=torch.float32).expand(len(hypotheses), -1)
