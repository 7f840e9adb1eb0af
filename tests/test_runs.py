"""The run folder (experiments/runs.py): each stage's loader, on a stage that is there, missing or foreign."""

from types import SimpleNamespace

import pytest
import torch

from experiments.runs import (
    NOT_RESUME_RELEVANT,
    check_dataset,
    demonstrator_spec,
    expert_config,
    load_encoder,
    load_expert,
    load_goal_distance,
    load_stage,
    load_world_model,
    recorded_training,
    sb3_expert,
)
from infra.errors import UserError
from worldmodel.checkpoint import FILENAME, save_checkpoint
from worldmodel.trainer import TrainConfig


def one_line_error(call) -> str:
    with pytest.raises(UserError) as error:
        call()
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("load, command", [
    (load_encoder, "jepa pretrain --data DATA --out"),
    (load_world_model, "jepa train-wm --data DATA --encoder"),
    (lambda run: load_goal_distance(run, world_model=None), "jepa train-distance --run"),
    (lambda run: load_expert(str(run)), "jepa train-expert --task TASK --out"),
    (lambda run: expert_config(run, "reacher"), "jepa train-expert --task reacher --out"),
    (lambda run: sb3_expert(None, run), "jepa train-expert"),
    (lambda run: demonstrator_spec("reacher", f"sb3:{run}"), "jepa train-expert --task reacher"),
])
def test_a_missing_stage_names_the_command_that_writes_it(tmp_path, load, command):
    message = one_line_error(lambda: load(tmp_path / "empty"))
    assert str(tmp_path / "empty") in message and command in message


def test_load_stage_rebuilds_from_the_recorded_config_and_returns_eval_mode(tmp_path):
    torch.manual_seed(0)
    saved = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5))
    (tmp_path / "policy").mkdir()
    save_checkpoint(tmp_path / "policy" / FILENAME, saved, None, 7, {"model": {"width": 4}})
    model, config = load_stage(tmp_path, "policy", lambda config: torch.nn.Sequential(torch.nn.Linear(3, config["model"]["width"]), torch.nn.Dropout(0.5)))
    assert config == {"model": {"width": 4}} and not model.training
    assert torch.equal(model[0].weight, saved[0].weight)


def test_a_foreign_checkpoint_is_a_one_line_error_naming_the_command(tmp_path):
    """A world_model/ folder that holds something else: its config lacks a key, or its weights do not fit."""
    (tmp_path / "world_model").mkdir()
    save_checkpoint(tmp_path / "world_model" / FILENAME, torch.nn.Linear(2, 2), None, 1, {"task": "two-room"})
    message = one_line_error(lambda: load_world_model(tmp_path))
    assert "holds no world model" in message and "'model'" in message and "jepa train-wm" in message
    save_checkpoint(tmp_path / "world_model" / FILENAME, torch.nn.Linear(2, 2), None, 1, {"width": 3})
    assert "does not fit this model" in one_line_error(lambda: load_stage(tmp_path, "world_model", lambda config: torch.nn.Linear(2, config["width"])))


def test_the_recorded_training_leaves_out_what_may_change_on_resumption():
    recorded = recorded_training(TrainConfig(steps=5, device="cpu", threads=2))
    assert recorded["steps"] == 5 and not set(NOT_RESUME_RELEVANT) & set(recorded)


def test_a_task_without_settable_state_has_no_world_model_dataset():
    dataset = SimpleNamespace(task="metaworld:reach-v3")
    assert "is for imitation" in one_line_error(lambda: check_dataset(dataset, {"task": "two-room"}, 64, "train-wm"))
