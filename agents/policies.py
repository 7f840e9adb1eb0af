"""The registry of policies: a name (`jepa imitate --policy NAME`) -> its config and network, and
the rebuilding of a policy from the config a run recorded."""

from __future__ import annotations

import dataclasses

from agents.chunk_policy import KINDS as CHUNK_KINDS
from agents.chunk_policy import ChunkPolicy, ChunkPolicyConfig
from agents.moment_policy import MomentPolicy, MomentPolicyConfig
from agents.policy import ChunkActor, PolicyConfig, Vote
from infra.errors import UserError
from worldmodel.checkpoint import dataclass_from_dict

POLICIES: dict[str, tuple[type[PolicyConfig], type[ChunkActor]]] = {
    **{kind: (ChunkPolicyConfig, ChunkPolicy) for kind in CHUNK_KINDS},
    "moments": (MomentPolicyConfig, MomentPolicy),
}


def build_policy(cfg: PolicyConfig) -> ChunkActor:
    """The network of `cfg.kind` (a `Vote` of `cfg.members` of them where there are several)."""
    network = POLICIES[cfg.kind][1]
    if cfg.members > 1:
        return Vote([network(dataclasses.replace(cfg, members=1)) for _ in range(cfg.members)])
    return network(cfg)


def config_from_record(model: dict) -> PolicyConfig:
    """The policy config a run recorded (`dataclasses.asdict` form). Runs recorded when every kind
    shared one config hold fields their kind never read: they are dropped, and the moments policy's
    image size is read from its encoder's."""
    if model.get("kind") not in POLICIES:
        raise UserError(f"unknown policy {model.get('kind')!r} (known: {', '.join(POLICIES)})")
    cls = POLICIES[model["kind"]][0]
    if cls is MomentPolicyConfig and "encoder" in model:
        model = model | {"image_size": model["encoder"]["image_size"]}
    return dataclass_from_dict(cls, model)
