"""The published systems' own tasks behind our task interface (envs/dmc_tasks.py, gym_pusht_tasks.py,
ogbench_tasks.py): their success tests, the ceiling's rollouts, the whole pipeline and imitation at
tiny budgets, LeWM's planner preset, and the errors for unknown names or a missing package. The
gymnasium contract, experts and state get/set run in tests/test_envs.py, over every task."""

import json
import sys

import numpy as np
import pytest
import torch

from agents.mpc import MPCConfig, with_preset
from agents.planner import horizon_cost
from conftest import TINY
from envs import make_task, task_spec
from envs.gym_pusht_tasks import coverage
from envs.reacher import fingertip
from experiments.cli import main
from infra.errors import UserError


def test_dmc_reacher_is_the_suites_model_with_its_success_radius():
    env = make_task("dmc:reacher-easy", pixels=False)
    assert env.model.nu == 2 and np.allclose(env.model.actuator_gear[:, 0], 0.05)  # the suite's torque motors
    env.reset(seed=0, options={"goal": np.array([0.5, 0.0, 0.0, 0.0])})  # arm stretched: the fingertip 0.22 m out
    target = env.model.geom("target").id
    assert np.allclose(env.model.geom_pos[target, :2], fingertip(env.goal_state[:2]))
    # the suite's own test: finger to target no further than target + finger radius (easy: 0.06 m)
    env.set_state(env.goal_state)
    finger = env.data.geom_xpos[env.model.geom("finger").id][:2]
    assert np.allclose(finger, fingertip(env.goal_state[:2]), atol=1e-6), "the suite's links must have the reacher's lengths"
    moved = env.goal_state.copy()
    for shoulder, expected in ((0.2, True), (0.4, False)):  # 0.2 rad moves it 0.044 m, 0.4 rad 0.088 m
        moved[0] = env.goal_state[0] + shoulder
        assert env.is_success(moved) == expected
    env.close()


@pytest.mark.parametrize("task, ceiling", [("dmc:reacher-easy", 1), ("gym-pusht:push-t", 1), ("ogbench:cube-single", 0)])
def test_quickstart_runs_end_to_end_on_each_published_task(tmp_path, capsys, task, ceiling):
    """collect -> pretrain -> train-wm (the task's recipe) -> plan-eval, at tiny budgets (OGBench's
    ceiling takes minutes per episode: its rollouts are checked in the test below)."""
    out = tmp_path / "qs"
    assert main(["quickstart", "--task", task, "--out", str(out), "--episodes", "4", "--pretrain-steps", "2", "--wm-steps", "2",
                 "--pairs", "1", "--seeds", "0", "--workers", "1", "--ceiling-pairs", str(ceiling), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == task and result["floor"] is not None and (result["ceiling"] is not None) == bool(ceiling)
    if task == "dmc:reacher-easy":  # the published planner on the same run
        assert main(["plan-eval", "--run", str(out), "--preset", "lewm", "--pairs", "1", "--seeds", "0", "--ceiling-pairs", "1", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["planner"] == "cem-lewm" and result["final_only"] and result["execute"] == 5


def test_imitation_runs_on_gym_pusht(tmp_path):
    demos, run = tmp_path / "demos", tmp_path / "policy"
    assert main(["collect", "--task", "gym-pusht:push-t", "--policy", "expert", "--episodes", "2", "--out", str(demos), "--workers", "1"]) == 0
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--train.steps", "2", *TINY]) == 0
    assert main(["policy-eval", "--run", str(run), "--episodes", "1", "--seeds", "0", "--steps", "3", "--no-baselines"]) == 0


def test_unknown_suite_task_and_missing_package_are_one_line_errors(monkeypatch):
    with pytest.raises(UserError, match="dmc:reacher-easy"):
        make_task("dmc:reacher-hard")
    monkeypatch.setitem(sys.modules, "dm_control.suite.reacher", None)  # as if dm-control were not installed
    with pytest.raises(UserError, match="pip install dm-control==1.0.28"):
        make_task("dmc:reacher-easy")


def test_lewm_preset_is_the_published_planner_and_scores_the_final_step_alone():
    cfg = with_preset(MPCConfig(), "lewm")
    assert (cfg.cem.samples, cfg.cem.iterations, cfg.cem.elites, cfg.horizon, cfg.execute) == (300, 30, 30, 5, 5)
    assert cfg.final_only and not cfg.repeat_actions
    per_step = torch.tensor([[3.0, 2.0, 1.0]])
    assert horizon_cost(per_step, 0.0, final_only=True).item() == 1.0 and horizon_cost(per_step, 1.0).item() == 3.0
    with pytest.raises(UserError, match="lewm"):
        with_preset(MPCConfig(), "dino")


def test_gym_pusht_state_round_trips_and_the_published_test_counts_agent_and_block():
    env = make_task("gym-pusht:push-t", image_size=32)
    env.reset(seed=3)
    state = env.get_state()
    env.step(np.array([0.5, -0.5]))
    moved = env.get_state()
    env.set_state(state)
    np.testing.assert_allclose(env.get_state(), state)  # the block turned about its centre of gravity lands where it was set
    rolled = env.rollout(np.array([[[0.5, -0.5]]]))  # the ceiling's rollout from the same state: the same step
    np.testing.assert_allclose(rolled[0, 0], moved, atol=1e-6)
    goal = state.copy()
    for shift, expected in ((np.array([12.0, 0, 12.0, 0]), True), (np.array([15.0, 0, 15.0, 0]), False)):  # L2 17.0 / 21.2 of 20
        shifted = state.copy()
        shifted[0:4] += shift
        assert env.is_success(shifted, goal) == expected
    turned = state.copy()
    turned[4] += np.pi / 9 + 0.01
    assert not env.is_success(turned, goal)
    env.close()


def test_gym_pusht_fixed_goal_is_the_packages_region_and_coverage_test():
    env = make_task("gym-pusht:push-t-fixed", image_size=32)
    env.reset(seed=1)
    np.testing.assert_allclose(env.goal_state[2:5], env.sim.goal_pose)  # every episode: the package's own region
    rng, outcomes = np.random.default_rng(0), set()
    for _ in range(12):  # near the region: some cover 95% of it, some do not
        state = env.goal_state.copy()
        state[2:5] += rng.normal(0, [3.0, 3.0, 0.04])
        env.set_state(state)
        packages = env.sim._get_coverage()
        assert coverage(state, env.goal_state) == pytest.approx(packages, abs=1e-9)
        assert env.is_success() == (packages >= 0.95)
        outcomes.add(env.is_success())
    assert outcomes == {True, False}
    env.close()


def test_gym_pusht_goal_images_show_no_contacts_left_by_the_experts_look_ahead():
    env, fresh = make_task("gym-pusht:push-t-fixed", image_size=64), make_task("gym-pusht:push-t-fixed", image_size=64)
    env.reset(seed=2)
    expert = task_spec("gym-pusht:push-t-fixed").expert_class(env)
    for _ in range(5):
        env.step(expert())  # its look-ahead pushes the block on the scratch simulation
    fresh.reset(seed=3)
    np.testing.assert_array_equal(env.render_goal(), fresh.render_goal())
    env.close()
    fresh.close()


def test_gym_pusht_draws_a_set_state_as_the_episode_drew_it():
    """pymunk draws shapes where they were last indexed: a state set (a goal image, a reset) must
    move the agent's and the block's shapes too."""
    env, other = make_task("gym-pusht:push-t", image_size=32), make_task("gym-pusht:push-t", image_size=32)
    env.reset(seed=5)
    for _ in range(3):
        frame = env.step(np.array([0.8, 0.3]))[0]["pixels"]
    other.reset(seed=6)
    np.testing.assert_array_equal(other.render_state(env.get_state()), frame)
    env.close()
    other.close()


def test_ogbench_cube_success_is_the_packages_radius_and_rollouts_match_steps():
    env = make_task("ogbench:cube-single", pixels=False)
    env.reset(seed=4)
    state = env.get_state()
    actions = np.random.default_rng(0).uniform(-1, 1, (1, 3, 5))
    rolled = env.rollout(actions)  # the ceiling's rollout: the same steps, the episode untouched
    np.testing.assert_allclose(env.get_state(), state)
    for action in actions[0]:
        env.step(action)
    np.testing.assert_allclose(rolled[0, -1], env.get_state(), atol=1e-8)
    goal = state.copy()
    for shift, expected in ((0.035, True), (0.045, False)):  # OGBench's test: the cube within 0.04 m
        moved = state.copy()
        moved[env._cube] += shift
        assert env.is_success(moved, goal) == expected
    env.close()
