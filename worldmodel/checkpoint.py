"""Checkpoints: one safetensors file holding the model weights, the optimizer state and, in its
metadata, the step and the run's config as JSON. No pickle anywhere: loading never runs code.

Written to a temporary name and renamed, so a crash mid-write leaves the last checkpoint whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from infra.errors import UserError
from infra.files import fsync

FILENAME = "checkpoint.safetensors"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state as flat tensors plus JSON-able scalars."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"optim/{index}/{key}"] = value.contiguous()
            else:
                scalars["state"].setdefault(str(index), {})[key] = float(value)
    return tensors, scalars


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, step: int, config: dict) -> Path:
    """Write model (+ optimizer) state at `step` to `path` atomically."""
    tensors = {f"model/{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"step": str(step), "config": json.dumps(config)}
    if optimizer is not None:
        optim_tensors, scalars = _optimizer_tensors(optimizer)
        tensors |= {k: v.cpu() for k, v in optim_tensors.items()}
        meta["optimizer"] = json.dumps(scalars)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    fsync(tmp)
    os.replace(tmp, path)
    return path


def read_metadata(path: Path) -> dict:
    """The checkpoint's step and config, or a clear error for a missing or damaged file."""
    if not path.exists():
        raise UserError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return {"step": int(meta["step"]), "config": json.loads(meta["config"]), "optimizer": json.loads(meta.get("optimizer", "null"))}
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise UserError(f"checkpoint {path} is damaged ({exc}); delete it to start over") from None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Load weights (and optimizer state) from `path`; returns the step."""
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"checkpoint {path} is damaged ({exc}); delete it to start over") from None
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise UserError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise UserError(f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}): "
                        "written by another version of this code? retrain it")
    if optimizer is not None and meta["optimizer"] is not None:
        scalars = meta["optimizer"]
        state = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, entry in scalars["state"].items():
            state.setdefault(int(index), {}).update({k: torch.tensor(v) for k, v in entry.items()})
        optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    return meta["step"]


def dataclass_from_dict(cls, data: dict):
    """Rebuild a (nested) config dataclass from its `dataclasses.asdict` form."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints[f.name]
        kind = typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind
        if dataclasses.is_dataclass(kind):
            value = dataclass_from_dict(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
