"""The action-conditioned world model: rollout semantics, batching, and the train-wm /
rollout-eval / plan-eval commands end to end with tiny budgets, including their bad-input errors."""

import dataclasses
import json
import shutil

import pytest
import torch
from conftest import write_dataset

from experiments.cli import main
from worldmodel.jepa import JEPAConfig
from worldmodel.predictor import PredictorConfig
from worldmodel.world_model import WorldModel, WorldModelConfig

PRETRAIN_TINY = ["--model.encoder.width", "16", "--model.clip-frames", "3", "--model.frame-skip", "2", "--model.predictor-width", "16",
                 "--model.predictor-depth", "1", "--model.projector-dim", "16", "--train.batch-size", "8", "--train.warmup", "2"]
WM_TINY = ["--model.frame-skip", "2", "--model.rollout-steps", "2", "--model.predictor.width", "16", "--model.predictor.heads", "2",
           "--train.batch-size", "8", "--train.warmup", "2", "--train.log-every", "2"]
PLAN_TINY = ["--pairs", "1", "--seeds", "0", "--ceiling-pairs", "1", "--mpc.horizon", "2", "--mpc.cem.samples", "8", "--mpc.cem.iterations", "2",
             "--mpc.mppi.samples", "8", "--mpc.mppi.iterations", "2", "--mpc.grad.samples", "2", "--mpc.grad.iterations", "2"]


def make_dataset(path, task="two-room", image_size=64):
    return write_dataset(path, task=task, image_size=image_size)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """(dataset, run folder with a tiny encoder and world model)."""
    root = tmp_path_factory.mktemp("wm")
    data, run = make_dataset(root / "data"), root / "run"
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--train.steps", "2", *PRETRAIN_TINY]) == 0
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(run), "--train.steps", "4", *WM_TINY]) == 0
    return data, run


def tiny_model(history=1, mode="adaln", latent="frame"):
    torch.manual_seed(0)
    cfg = WorldModelConfig(latent=latent, action_dim=2, frame_skip=2, encoder=dataclasses.asdict(JEPAConfig()),
                           predictor=PredictorConfig(width=32, history=history, action_mode=mode))
    model = WorldModel(cfg).eval()
    for p in model.predictor.parameters():  # leave the zero init, so outputs depend on every input
        torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("history", [1, 3])
@pytest.mark.parametrize("mode", ["adaln", "token", "both"])
def test_rollout_is_the_predictor_fed_its_own_predictions(history, mode):
    model = tiny_model(history, mode)
    z = torch.randn(2, history, 1, 64)
    actions = torch.randn(2, history - 1 + 4, 4)
    rolled = model.rollout(z, actions)
    assert rolled.shape == (2, 4, 1, 64)
    seq, acts = z, actions
    for k in range(4):  # the window slides over the sequence of real then predicted latents
        window = seq[:, -history:]
        last = history - 1 + k
        step = model.predictor(window, acts[:, last + 1 - window.shape[1]: last + 1])[:, -1:]
        assert torch.allclose(rolled[:, k: k + 1], step, atol=1e-5)
        seq = torch.cat([seq, step], 1)


def test_rollout_batches_over_leading_dims_and_depends_on_actions():
    model = tiny_model(2, latent="tokens")
    z = torch.randn(3, 5, 2, 16, 64)  # [B, S, Th, N, D]
    actions = torch.randn(3, 5, 4, 4)
    rolled = model.rollout(z, actions)
    assert rolled.shape == (3, 5, 3, 16, 64)
    assert torch.allclose(rolled[1, 2], model.rollout(z[1, 2], actions[1, 2]), atol=1e-5)
    assert not torch.allclose(rolled, model.rollout(z, -actions))


def test_untrained_predictor_copies_the_last_latent():
    cfg = WorldModelConfig(action_dim=2, encoder=dataclasses.asdict(JEPAConfig()))
    model = WorldModel(cfg)
    z = torch.randn(4, 1, 1, 64)
    assert torch.allclose(model.rollout(z, torch.randn(4, 3, 10)), z.expand(-1, 3, -1, -1))


def test_frozen_encoder_is_not_trained(trained_run):
    data, run = trained_run
    config = json.loads((run / "world_model" / "config.json").read_text())
    assert config["model"]["encoder"]["encoder"]["width"] == 16 and config["model"]["action_dim"] == 2
    from safetensors.torch import load_file

    encoder = load_file(str(run / "encoder" / "checkpoint.safetensors"))
    world = load_file(str(run / "world_model" / "checkpoint.safetensors"))
    keys = [k for k in world if k.startswith("model/encoder.")]
    assert keys and all(torch.equal(world[k], encoder[k]) for k in keys)


def test_rerunning_train_wm_reuses_the_finished_model(trained_run):
    data, run = trained_run
    checkpoint = run / "world_model" / "checkpoint.safetensors"
    before = checkpoint.read_bytes()
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(run), "--train.steps", "4", *WM_TINY]) == 0
    assert checkpoint.read_bytes() == before


def test_rollout_eval_json_is_aligned_by_horizon(trained_run, capsys):
    data, run = trained_run
    capsys.readouterr()
    assert main(["rollout-eval", "--run", str(run), "--data", str(data), "--horizon", "4", "--samples", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_steps"] == [2, 4]
    for key in ("latent_error", "copy_last_error", "shuffled_action_error", "position_error"):
        assert len(result[key]) == 2 and all(v >= 0 for v in result[key])
    assert result["success_tolerance"] == 0.1
    assert (run / "world_model" / "rollout.mp4").stat().st_size > 0


@pytest.mark.parametrize("planner", ["cem", "mppi", "grad"])
def test_plan_eval_smoke(trained_run, capsys, planner):
    data, run = trained_run
    capsys.readouterr()
    assert main(["plan-eval", "--run", str(run), "--planner", planner, *PLAN_TINY, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"success_rate", "ci95", "floor", "ceiling", "plan_time_s_median", "plan_time_s_p90", "pairs", "seeds"}
    assert result["pairs"] == 1 and result["seeds"] == [0] and 0 <= result["ci95"][0] <= result["ci95"][1] <= 1
    assert list((run / "plan_eval").glob(f"two-room_default_{planner}_seed0_pair0.mp4"))


def test_train_distance_then_plan_eval_adds_it_to_the_cost(trained_run, capsys):
    data, run = trained_run
    assert main(["train-distance", "--run", str(run), "--train.steps", "3", "--train.batch-size", "16", "--model.width", "16"]) == 0
    assert (run / "goal_distance" / "checkpoint.safetensors").exists()
    for argv, weight in (([], 1.0), (["--mpc.distance-weight", "0"], 0.0)):
        capsys.readouterr()
        assert main(["plan-eval", "--run", str(run), *PLAN_TINY, "--ceiling-pairs", "0", "--videos", "0", "--no-save", *argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["goal_distance_weight"] == weight


@pytest.mark.parametrize("argv, message", [
    (["train-wm", "--data", "{data}", "--encoder", "{empty}", "--out", "{empty}"], "jepa pretrain"),
    (["rollout-eval", "--run", "{empty}", "--data", "{data}"], "jepa train-wm"),
    (["plan-eval", "--run", "{empty}"], "jepa train-wm"),
    (["train-distance", "--run", "{empty}"], "jepa train-wm"),
    (["train-distance", "--run", "{run}", "--data", "{small}"], "--image-size 64"),
    (["train-distance", "--run", "{run}", "--model.expectile", "0.2"], "expectile"),
    (["plan-eval", "--run", "{run}", "--task", "reacher"], "trained on two-room"),
    (["plan-eval", "--run", "{run}", "--setting", "maze"], "no setting 'maze'"),
    (["plan-eval", "--run", "{run}", "--seeds", "a,b"], "--seeds"),
    (["plan-eval", "--run", "{run}", "--seeds", "0,0"], "--seeds"),
    (["plan-eval", "--run", "{run}", "--mpc.horizon", "0"], "horizon must be at least 1"),
    (["quickstart", "--out", "{run}", "--seeds", "-1"], "--seeds"),
    (["plan-eval", "--run", "{run}", "--planner", "astar"], "planner must be one of"),
    (["quickstart", "--out", "{empty}", "--planner", "astar"], "planner must be one of"),
    (["plan-eval", "--run", "{run}", "--ceiling-pairs", "-1"], "--ceiling-pairs"),
    (["quickstart", "--out", "{empty}", "--ceiling-pairs", "-1"], "--ceiling-pairs"),
    (["plan-eval", "--run", "{run}", "--preset", "dino"], "unknown planner preset"),
    (["quickstart", "--out", "{empty}", "--preset", "dino"], "unknown planner preset"),
    (["quickstart", "--out", "{empty}", "--distance-steps", "-1"], "must be positive"),
    (["rollout-eval", "--run", "{run}", "--data", "{small}"], "--image-size 64"),
    (["rollout-eval", "--run", "{run}", "--data", "{data}", "--horizon", "400"], "lower --horizon"),
])
def test_bad_input_gives_one_line_errors(trained_run, tmp_path_factory, capsys, argv, message):
    data, run = trained_run
    empty = tmp_path_factory.mktemp("empty")
    small = tmp_path_factory.getbasetemp() / "small"
    if not small.exists():
        make_dataset(small, image_size=32)
    before = sorted(p.name for p in (run / "world_model").iterdir())
    argv = [a.format(data=data, run=run, empty=empty, small=small) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in (run / "world_model").iterdir()) == before


def test_quickstart_smoke_and_rerun_reuses_stages(tmp_path, capsys):
    out = tmp_path / "qs"
    argv = ["quickstart", "--out", str(out), "--episodes", "4", "--pretrain-steps", "2", "--wm-steps", "2", "--distance-steps", "2", "--pairs", "1",
            "--seeds", "0", "--workers", "1", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"success_rate", "ci95", "floor", "ceiling", "plan_time_s_median", "wall_s"} <= set(result)
    assert set(result["settings"]) == {"default", "cross-room"} and "train-distance" in result["stage_wall_s"]
    for path in ("data/episodes.h5", "encoder/checkpoint.safetensors", "world_model/checkpoint.safetensors",
                 "goal_distance/checkpoint.safetensors", "report.md", "report.png", "metrics.json"):
        assert (out / path).exists(), path
    checkpoint = (out / "world_model" / "checkpoint.safetensors").read_bytes()
    assert main(argv) == 0  # a rerun reuses the data and both trained stages
    assert (out / "world_model" / "checkpoint.safetensors").read_bytes() == checkpoint
    assert main(["plan-eval", "--run", str(out), "--pairs", "1", "--seeds", "1", "--ceiling-pairs", "0", "--json"]) == 0


def test_finetune_trains_the_encoder_too_and_a_stale_goal_distance_is_refused(trained_run, tmp_path, capsys):
    data, run = trained_run
    out = tmp_path / "ft"
    assert main(["train-wm", "--data", str(data), "--encoder", str(run), "--out", str(out), "--train.steps", "3", "--model.finetune", *WM_TINY]) == 0
    from safetensors.torch import load_file

    encoder = load_file(str(run / "encoder" / "checkpoint.safetensors"))
    tuned = load_file(str(out / "world_model" / "checkpoint.safetensors"))
    keys = [k for k in tuned if k.startswith("model/encoder.") and "weight" in k]
    assert any(not torch.equal(tuned[k], encoder[k]) for k in keys)
    if not (run / "goal_distance").exists():
        assert main(["train-distance", "--run", str(run), "--train.steps", "2", "--train.batch-size", "16", "--model.width", "16"]) == 0
    shutil.copytree(run / "goal_distance", out / "goal_distance")  # a distance trained on the other encoder's latents
    capsys.readouterr()
    assert main(["plan-eval", "--run", str(out), *PLAN_TINY, "--no-save"]) == 2
    assert "was not trained on the latents of" in capsys.readouterr().err
    assert main(["plan-eval", "--run", str(out), *PLAN_TINY, "--no-save", "--mpc.distance-weight", "0"]) == 0  # not used: not loaded
    assert main(["train-distance", "--run", str(out), "--train.steps", "2"]) == 2
    assert "delete it" in capsys.readouterr().err
