"""The world model's state beyond the learned latent: colour moments and proprio joined to each
frame, the proprio read-out for goal images, the cost's data-chosen channel weights, and the
commands that train and plan with them."""

import dataclasses
import json

import pytest
import torch
from conftest import write_dataset
from test_world_model import PLAN_TINY, PRETRAIN_TINY, WM_TINY

from agents.planner import latent_step_cost
from experiments.cli import main
from worldmodel.goal_features import goal_mask
from worldmodel.jepa import JEPAConfig
from worldmodel.predictor import PredictorConfig
from worldmodel.world_model import WorldModel, WorldModelConfig


def state_model(moments=2, proprio_dim=3):
    cfg = WorldModelConfig(action_dim=2, frame_skip=2, moments=moments, proprio=proprio_dim > 0, proprio_dim=proprio_dim,
                           encoder=dataclasses.asdict(JEPAConfig()), predictor=PredictorConfig(width=32, history=2))
    return WorldModel(cfg).eval()


def test_the_state_joins_latent_moments_and_proprio_and_a_rollout_carries_it():
    model = state_model()
    assert list(model.parts) == ["latent", "moments", "proprio"]
    width = model.latent_shape[1]
    assert width == model.parts["proprio"].stop == 64 + 2 * 10 + 3
    pixels = torch.randint(0, 256, (4, 2, 64, 64, 3), dtype=torch.uint8)
    proprio = torch.randn(4, 2, 3)
    z = model.encode(pixels, proprio)
    assert z.shape == (4, 2, 1, width)
    assert torch.allclose(z[..., 0, model.parts["proprio"]], proprio)  # standardisation starts as the identity
    for p in model.predictor.parameters():
        torch.nn.init.normal_(p, std=0.1)
    rolled = model.rollout(z, torch.randn(4, 1 + 3, 4))
    assert rolled.shape == (4, 3, 1, width) and torch.isfinite(rolled).all()


def test_the_read_out_gives_a_goal_image_its_proprio():
    model = state_model()
    image = torch.randn(500, model.parts["proprio"].start)
    truth = torch.randn(model.parts["proprio"].start, 3)
    model.fit_proprio_readout(image, image @ truth + 0.5)
    read = image @ model.proprio_readout[:-1] + model.proprio_readout[-1]
    assert torch.allclose(read, image @ truth + 0.5, atol=0.05)
    pixels = torch.randint(0, 256, (2, 1, 64, 64, 3), dtype=torch.uint8)
    without = model.encode(pixels)[..., 0, model.parts["proprio"]]  # no proprio given: read from the image
    expected = model.image_latent(pixels)[:, :, 0] @ model.proprio_readout[:-1] + model.proprio_readout[-1]
    assert torch.allclose(without, expected, atol=1e-4)


def test_the_goal_channels_come_from_the_data_and_hold_under_noise():
    generator = torch.Generator().manual_seed(0)
    ends = torch.randn(200, 6, generator=generator)
    chosen = []
    for seed in (1, 2):  # two datasets that differ by noise only
        noise = torch.Generator().manual_seed(seed)
        goals = torch.randn(200, 6, generator=noise)  # channels the goal does not pin (a pusher, a hand)
        goals[:, :2] = ends[:, :2] + 0.2 * torch.randn(200, 2, generator=noise)  # the object, where episodes end
        chosen.append(goal_mask(goals[None], ends[None]))
    assert chosen[0].tolist() == chosen[1].tolist() == [1, 1, 0, 0, 0, 0]


def test_a_channel_with_no_weight_does_not_count():
    goal = torch.zeros(1, 1, 3)
    predicted = torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]]).reshape(1, 2, 1, 1, 3)
    weighted = latent_step_cost(predicted, goal, "l2", torch.tensor([1.0, 1.0, 0.0]))
    assert weighted[0, :, 0].tolist() == pytest.approx([0.0, 0.5])
    assert latent_step_cost(predicted, goal, "l2")[0, :, 0].tolist() == pytest.approx([25 / 3, 1 / 3])


@pytest.fixture(scope="module")
def state_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    data, run = write_dataset(root / "data", task="push-t"), root / "run"
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--train.steps", "2", *PRETRAIN_TINY]) == 0
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(run), "--train.steps", "4", *WM_TINY,
                 "--model.moments", "3", "--model.proprio"]) == 0
    return data, run


@pytest.mark.parametrize("argv", [[], ["--goal-proprio", "observed", "--mpc.cost", "goal"]])
def test_plan_eval_with_proprio_and_moments(state_run, capsys, argv):
    data, run = state_run
    capsys.readouterr()
    assert main(["plan-eval", "--run", str(run), *PLAN_TINY, "--ceiling-pairs", "0", "--videos", "0", "--no-save", *argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["state"] == ["latent", "moments", "proprio"]
    assert result["goal_proprio"] == (argv[1] if argv else "image") and result["cost"] == (argv[-1] if argv else "all")
    assert main(["rollout-eval", "--run", str(run), "--data", str(data), "--horizon", "4", "--samples", "5", "--videos", "0"]) == 0


def test_goal_proprio_without_proprio_in_the_state_is_a_one_line_error(state_run, tmp_path, capsys):
    data, run = state_run
    plain = tmp_path / "plain"
    assert main(["pretrain", "--data", str(data), "--out", str(plain), "--train.steps", "2", *PRETRAIN_TINY]) == 0
    assert main(["train-wm", "--data", str(data), "--encoder", str(plain), "--out", str(plain), "--train.steps", "2", *WM_TINY]) == 0
    capsys.readouterr()
    assert main(["plan-eval", "--run", str(plain), *PLAN_TINY, "--goal-proprio", "observed"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model.proprio" in err
    assert main(["train-wm", "--data", str(data), "--encoder", str(plain), "--out", str(tmp_path / "t"), "--model.latent", "tokens",
                 "--model.moments", "2"]) == 2
    assert "--model.latent frame" in capsys.readouterr().err


def test_success_by_start_partitions_the_episodes():
    from experiments.plan_commands import success_by_kind

    split = success_by_kind([True, False, True, True], ["held", "grasp", "grasp", "held"])["success_by_start"]
    assert {k: v["episodes"] for k, v in split.items()} == {"grasp": 2, "held": 2}
    assert split["held"]["success_rate"] == 1.0 and split["grasp"]["success_rate"] == 0.5
    assert success_by_kind([True], [None]) == {}


def test_cube_and_push_t_pairs_are_split_by_what_they_ask():
    import numpy as np

    from envs.cube import CubeEnv
    from envs.push_t import PushTEnv

    cube = CubeEnv(pixels=False)
    start = cube.random_state(np.random.default_rng(0))
    lifted = start.copy()
    lifted[7] += 0.1
    assert cube.pair_kind(start, start) == "needs a grasp" and cube.pair_kind(lifted, start) == "cube held at the start"
    push = PushTEnv(pixels=False)
    start = push.random_state(np.random.default_rng(0))
    turned = start.copy()
    turned[2] += 0.5
    assert push.pair_kind(start, start) == "turn within 0.2 rad" and push.pair_kind(start, turned) == "needs a turn beyond 0.2 rad"


class TargetImagination:
    """Cost: squared distance of the planned block actions to a target sequence."""

    def __init__(self, target):
        self.target = target  # [H, skip * A]

    def observe(self, obs, info, executed):
        pass

    def cost(self, blocks):
        return ((blocks - self.target) ** 2).mean((-2, -1))


class ChunkPolicy:
    """A stand-in policy whose chunk is fixed."""

    def __init__(self, chunk):
        self.chunk, self.seen = chunk, 0

    def reset(self):
        self.seen = 0

    def observe(self, obs):
        self.seen += 1

    def predict_action_hypotheses(self, obs, observe=True):
        return torch.stack([-self.chunk, self.chunk])[None], torch.tensor([[2.0, 1.0]])  # the optimum is the less likely one


def test_the_planner_keeps_the_priors_plan_where_it_scores_best():
    import numpy as np

    from agents.mpc import MPC, MPCConfig, PolicyPrior

    skip, horizon = 2, 3
    chunk = torch.tensor([[0.9, -0.9]] * 4 + [[0.3, 0.3]] * 2)  # 6 env actions: blocks 0-1 at (0.9, -0.9), block 2 at (0.3, 0.3)
    target = torch.tensor([[0.9, -0.9, 0.9, -0.9]] * 2 + [[0.3, 0.3, 0.3, 0.3]])  # the prior's plan is the optimum
    mpc = MPC(MPCConfig(horizon=horizon, execute=1, cem=dataclasses.replace(MPCConfig().cem, samples=4, iterations=1, elites=2)), 2, skip)
    policy = ChunkPolicy(chunk)
    mpc.reset(TargetImagination(target), PolicyPrior(policy, np.zeros((8, 8, 3), np.uint8)))
    obs = {"pixels": np.zeros((8, 8, 3), np.uint8), "proprio": np.zeros(2, np.float32)}
    first = mpc.act(obs, {})
    assert np.allclose(first, [0.9, -0.9]) and mpc.prior_kept == 1
    mpc.act(obs, {})
    assert policy.seen == 2  # the policy sees every step's observation
    fine, covered = PolicyPrior(policy, np.zeros((8, 8, 3), np.uint8)).blocks(obs, skip, horizon, repeat=False)
    assert covered == 3 and fine.shape == (2, 3, skip * 2) and torch.equal(fine[1].reshape(-1, 2), chunk)  # every action, in order
    only = MPC(MPCConfig(horizon=horizon, prior_only=True), 2, skip)
    only.reset(TargetImagination(-target), PolicyPrior(policy, np.zeros((8, 8, 3), np.uint8)))
    assert np.allclose(only.act(obs, {}), [-0.9, 0.9])  # the world model's cost picks the hypothesis


def test_plan_eval_with_a_policy_prior_reports_the_policy_alone(capsys, trained_policy, tmp_path_factory):
    from test_world_model import make_dataset

    root = tmp_path_factory.mktemp("prior")
    data, run = make_dataset(root / "data"), root / "run"
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--train.steps", "2", *PRETRAIN_TINY]) == 0
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(run), "--train.steps", "2", *WM_TINY]) == 0
    capsys.readouterr()
    assert main(["plan-eval", "--run", str(run), *PLAN_TINY, "--ceiling-pairs", "0", "--videos", "0", "--no-save",
                 "--prior", str(trained_policy), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy_alone"] in (0.0, 1.0) and 0 <= result["prior_kept"] <= 1 and result["prior"] == str(trained_policy)


def test_a_prior_of_another_task_is_a_one_line_error(state_run, trained_policy, capsys):
    data, run = state_run  # push-t; the policy is two-room's
    capsys.readouterr()
    assert main(["plan-eval", "--run", str(run), *PLAN_TINY, "--prior", str(trained_policy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "two-room" in err and "push-t" in err


def test_state_probe_scores_each_part_of_the_state(state_run, capsys, monkeypatch):
    from experiments.benchmarks import state_probe

    data, run = state_run
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["state_probe", "--run", str(run), "--train-frames", "20", "--test-frames", "10", "--json"])
    state_probe.main()
    result = json.loads(capsys.readouterr().out)
    assert set(result["r2"]) == {"latent", "moments", "proprio", "whole state", "whole state, goal-image proprio"}
    assert all(len(r2) == len(result["variables"]) for r2 in result["r2"].values())


def test_plan_eval_plans_the_way_the_runs_recipe_says_unless_a_flag_says_otherwise(state_run, capsys):
    data, run = state_run
    (run / "plan_recipe.json").write_text(json.dumps({"cost": "goal", "goal_proprio": "observed"}))
    try:
        for argv, cost, mode in (([], "goal", "observed"), (["--mpc.cost", "all", "--goal-proprio", "image"], "all", "image")):
            capsys.readouterr()
            assert main(["plan-eval", "--run", str(run), *PLAN_TINY, "--ceiling-pairs", "0", "--videos", "0", "--no-save", *argv, "--json"]) == 0
            result = json.loads(capsys.readouterr().out)
            assert (result["cost"], result["goal_proprio"]) == (cost, mode)
        (run / "plan_recipe.json").write_text("[1, 2]")
        assert main(["plan-eval", "--run", str(run), *PLAN_TINY]) == 2
        assert "not a planning recipe" in capsys.readouterr().err
    finally:
        (run / "plan_recipe.json").unlink()


def test_quickstart_follows_the_tasks_planning_recipe(tmp_path, capsys, monkeypatch):
    from envs.push_t import PushTEnv

    monkeypatch.setattr(PushTEnv, "planning_recipe", {"world_model": {"moments": 2, "proprio": True}, "cost": "goal", "prior": 2})
    out = tmp_path / "qs"
    assert main(["quickstart", "--task", "push-t", "--out", str(out), "--episodes", "3", "--pretrain-steps", "2", "--wm-steps", "2",
                 "--prior-steps", "2", "--pairs", "1", "--seeds", "0", "--workers", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["state"] == ["latent", "moments", "proprio"] and result["cost"] == "goal" and result["prior"] == str(out)
    assert result["policy_alone"] is not None and "success_by_start" in result
    assert json.loads((out / "plan_recipe.json").read_text()) == {"cost": "goal", "goal_proprio": "image", "prior": True}
    assert "policy prior yes" in (out / "report.md").read_text()
