"""The planning protocol's settings against the task interface: pair rules the tasks declare, seeds."""

import numpy as np
import pytest

from envs import task_spec
from envs.two_room import TwoRoomEnv
from experiments.cli import main
from experiments.protocol import SETTINGS, Setting, draw_pairs, parse_seeds
from infra.errors import UserError


@pytest.mark.parametrize("task, name", [(task, name) for task, settings in SETTINGS.items() for name in settings])
def test_every_setting_is_on_a_settable_task_and_names_a_rule_its_task_declares(task, name):
    env_class = task_spec(task).env_class
    assert env_class.settable_state
    rule = SETTINGS[task][name].pair_rule
    assert rule is None or rule in env_class.pair_rules


def test_two_room_cross_room_rule_compares_the_rooms():
    rule = TwoRoomEnv.pair_rules["cross-room"]
    assert rule(np.array([-0.5, 0.2, 0, 0]), np.array([0.5, 0.2, 0, 0]))
    assert not rule(np.array([0.3, -0.5, 0, 0]), np.array([0.6, 0.5, 0, 0]))


def test_pairs_of_a_setting_with_a_rule_meet_it_and_the_default_ones_need_not():
    crossing = draw_pairs("two-room", SETTINGS["two-room"]["cross-room"], seed=0, count=6)
    assert all(TwoRoomEnv.room(start[0]) != TwoRoomEnv.room(goal[0]) for start, goal in crossing)
    free = draw_pairs("two-room", Setting(75, 100), seed=0, count=6)
    assert any(TwoRoomEnv.room(start[0]) == TwoRoomEnv.room(goal[0]) for start, goal in free)


def test_seeds_parse_or_give_one_line_errors():
    assert parse_seeds("0, 2,5") == [0, 2, 5]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def test_sb3_experts_train_only_on_tasks_with_settable_state(tmp_path, capsys):
    assert main(["train-expert", "--task", "metaworld:reach-v3", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "scripted experts" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
