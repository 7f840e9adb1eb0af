"""The shared training loop: end-to-end pretrain/probe, exact resume after SIGKILL, DDP
equivalence, non-finite losses, and run folders with another config."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from envs import UserError
from experiments.cli import main
from worldmodel.checkpoint import FILENAME, read_metadata, save_checkpoint
from worldmodel.jepa import spread_metrics
from worldmodel.trainer import TrainConfig, Trainer, resolve_metrics, watch_collapse

TINY = ["--model.encoder.width", "16", "--model.clip-frames", "3", "--model.frame-skip", "2", "--model.predictor-width", "16", "--model.predictor-depth", "1",
        "--model.projector-dim", "32", "--train.batch-size", "8", "--train.warmup", "2", "--train.log-every", "2"]


def pretrain_argv(data, out, steps, objective="vicreg", extra=()):
    return ["pretrain", "--data", str(data), "--out", str(out), "--objective", objective,
            "--train.steps", str(steps), *TINY, *extra]


def weights(run: Path) -> dict:
    return load_file(str(run / "encoder" / FILENAME))


@pytest.mark.parametrize("objective", ["vjepa", "sigreg", "vicreg"])
def test_pretrain_then_probe_end_to_end(tiny_dataset, tmp_path, capsys, objective):
    run = tmp_path / "run"
    assert main(pretrain_argv(tiny_dataset, run, 4, objective)) == 0
    assert (run / "encoder" / "metrics.json").exists() and list((run / "encoder" / "tb").iterdir())
    assert json.loads((run / "encoder" / "config.json").read_text())["model"]["objective"] == objective
    capsys.readouterr()
    assert main(["probe", "--run", str(run), "--data", str(tiny_dataset), "--train-frames", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"r2", "position_r2", "position_r2_random_init", "position_r2_pixels"} <= set(result)
    assert set(result["r2"]) == {"agent_x", "agent_y", "agent_vx", "agent_vy"}
    if objective == "vicreg":  # the MLP head, and every feature set's R2 in the JSON
        assert main(["probe", "--run", str(run), "--data", str(tiny_dataset), "--train-frames", "30", "--head", "mlp", "--mlp-steps", "200", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["head"] == "mlp" and set(result["r2_by_features"]) == {"tokens", "pooled", "keypoints", "latent"}
        assert set(result["r2_pixels"]) == set(result["r2"])
        assert main(["probe", "--run", str(run), "--data", str(tiny_dataset), "--head", "forest"]) == 2
        assert "--head must be one of" in capsys.readouterr().err


def test_probe_without_encoder_names_the_command(tiny_dataset, tmp_path, capsys):
    assert main(["probe", "--run", str(tmp_path / "empty"), "--data", str(tiny_dataset)]) == 2
    assert "jepa pretrain" in capsys.readouterr().err


def test_rerun_with_another_config_is_refused(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_argv(tiny_dataset, run, 2)) == 0
    assert main(pretrain_argv(tiny_dataset, run, 2, extra=["--train.lr", "0.1"])) == 2
    assert "another config" in capsys.readouterr().err


def test_a_run_that_predates_a_new_option_resumes_but_a_changed_option_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / FILENAME, model, None, 3, {"model": {"width": 4}, "seed": 0})
    cfg = TrainConfig(steps=3, batch_size=1)
    assert Trainer(cfg, lambda *_: {}, model, tmp_path, {"model": {"width": 4, "modes": 1}, "seed": 0}).fit() == {}
    with pytest.raises(UserError, match="differs in model"):
        Trainer(cfg, lambda *_: {}, model, tmp_path, {"model": {"width": 8, "modes": 1}, "seed": 0}).fit()


def test_a_run_that_predates_render_revisions_resumes_only_on_data_of_unknown_revision(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / FILENAME, model, None, 3, {"task": "t"})
    cfg = TrainConfig(steps=3, batch_size=1)
    assert Trainer(cfg, lambda *_: {}, model, tmp_path, {"task": "t", "render_revision": None}).fit() == {}
    with pytest.raises(UserError, match="differs in render_revision"):  # the data was collected again since
        Trainer(cfg, lambda *_: {}, model, tmp_path, {"task": "t", "render_revision": 2}).fit()


def _run_cli(argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kwargs)


@pytest.mark.parametrize("objective", ["vjepa", "mc-jepa"])
def test_resume_after_sigkill_gives_the_same_weights(tiny_dataset, tmp_path, objective):
    steps = 60
    argv = lambda out: pretrain_argv(tiny_dataset, out, steps, objective, ["--train.checkpoint-every", "3", "--train.threads", "1"])  # noqa: E731
    assert _run_cli(argv(tmp_path / "whole")).wait(timeout=300) == 0
    victim = _run_cli(argv(tmp_path / "killed"))
    checkpoint = tmp_path / "killed" / "encoder" / FILENAME
    deadline = time.time() + 120
    while not (checkpoint.exists() and read_metadata(checkpoint)["step"] >= 6) and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed: make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = read_metadata(checkpoint)["step"]
    assert killed_at < steps
    assert _run_cli(argv(tmp_path / "killed")).wait(timeout=300) == 0
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), f"{key} differs after resuming from step {killed_at}"


@pytest.mark.parametrize("objective", ["vicreg", "vjepa"])
def test_two_ddp_processes_match_one_process(tiny_dataset, tmp_path, objective):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    argv = lambda out: pretrain_argv(tiny_dataset, out, 5, objective, ["--train.threads", "1"])  # noqa: E731
    assert _run_cli(argv(tmp_path / "one")).wait(timeout=300) == 0
    two = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "experiments.cli", *argv(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    # Parameters whose true gradient is zero (attention key biases; a bias that the regulariser
    # centres away) get Adam updates of float rounding noise divided by its own size: they agree to
    # 1e-4, every other weight to 1e-6.
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-4, rtol=1e-3), key
    close = [torch.allclose(one[k], two[k], atol=1e-6) for k in one if k.startswith("model/")]
    assert sum(close) >= 0.9 * len(close)


class _Counted(torch.nn.Module):
    """A one-parameter model whose forward's output depends on how often it was called."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.calls = 0

    def forward(self, batch, generator):
        self.calls += 1
        return self.output(self.calls)


class _Diverging(_Counted):
    """A model whose loss turns NaN at step 5."""

    def output(self, call):
        return (self.w**2).sum() * (float("nan") if call == 5 else 1.0), {}


def test_nonfinite_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=1, checkpoint_every=2, warmup=1)
    trainer = Trainer(cfg, lambda step, rank, world: {}, _Diverging(), tmp_path, {"x": 1})
    with pytest.raises(UserError, match="loss became nan at step 4; the checkpoint at step 4 is intact"):
        trainer.fit()
    assert read_metadata(tmp_path / FILENAME)["step"] == 4


class _GoalCollapsing(torch.nn.Module):
    """A model whose frames' vectors are fine but whose goal vectors have collapsed."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, batch, generator):
        return (self.w**2).sum(), {"collapse/relative_std": torch.tensor(0.5), "collapse/effective_rank": torch.tensor(9.0),
                                   "collapse/goal/relative_std": torch.tensor(1e-5), "collapse/goal/effective_rank": torch.tensor(9.0)}


def test_a_collapsing_goal_vector_is_reported_by_name(tmp_path, capsys):
    trainer = Trainer(TrainConfig(steps=2, batch_size=1, log_every=1, warmup=1), lambda step, rank, world: {}, _GoalCollapsing(), tmp_path, {"x": 1})
    assert trainer.fit()["collapsed"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert warnings and all("(collapse/goal)" in line for line in warnings)  # the frames' vectors are not blamed


def test_relative_spread_is_scale_free_and_zero_for_identical_vectors():
    z = torch.randn(32, 16) + 3.0
    relative = spread_metrics("collapse", z)["collapse/relative_std"]
    assert torch.allclose(spread_metrics("collapse", 100 * z)["collapse/relative_std"], relative)
    assert 0.1 < relative < 0.5  # unit spread around a mean of 3
    assert spread_metrics("c", z[:1].expand(8, -1))["c/relative_std"] == 0 and spread_metrics("c", torch.zeros(8, 4))["c/relative_std"] == 0
    assert "c/relative_std" not in spread_metrics("c", z, relative=False)  # token grids: judged by the absolute std


def test_collapse_is_judged_on_the_relative_spread_where_reported_else_the_absolute_std(capsys):
    collapsing = set()
    watch_collapse({"collapse/relative_std": 0.5, "collapse/std_mean": 1e-5, "collapse/effective_rank": 9.0}, 1, collapsing)
    assert not collapsing  # tiny vectors that do differ: not collapsed
    watch_collapse({"collapse/std_mean": 5e-4, "collapse/effective_rank": 9.0, "collapse/goal/relative_std": float("nan")}, 2, collapsing)
    assert collapsing == {"collapse", "collapse/goal"}  # the world model's absolute floor; NaN is no spread
    watch_collapse({"collapse/std_mean": 1.5e-3, "collapse/effective_rank": 9.0}, 3, collapsing)
    assert "collapse" in collapsing  # above the floor but not twice it: not yet recovered
    watch_collapse({"collapse/std_mean": 0.1, "collapse/effective_rank": 9.0}, 4, collapsing)
    assert collapsing == {"collapse/goal"}  # the goal's last known state stands while its metric is absent


class _DippingSpread(_Counted):
    """A model whose vectors' spread dips below the collapse threshold early on and recovers, as
    healthy policy runs do in their first few hundred steps."""

    def output(self, call):
        spread = 1e-3 if 2 <= call <= 3 else 0.4
        return (self.w**2).sum(), {"collapse/relative_std": torch.tensor(spread), "collapse/effective_rank": torch.tensor(9.0)}


def test_a_spread_that_dips_and_recovers_is_reported_but_not_a_collapse(tmp_path, capsys):
    trainer = Trainer(TrainConfig(steps=6, batch_size=1, log_every=1, warmup=1), lambda step, rank, world: {}, _DippingSpread(), tmp_path, {"x": 1})
    assert not trainer.fit()["collapsed"]  # the verdict is the last log's state
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines if "collapsing" in line or "recovered" in line] == [
        "WARNING: the representation is collapsing at step 2", "the representation recovered at step 4"]  # once each, not every log


class _Noisy(torch.nn.Module):
    """A model whose training loss draws from the global generator and whose eval mode gives another loss."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, batch, generator):
        noise = torch.randn(3) if self.training else torch.zeros(3)
        return ((self.w - noise) ** 2).sum(), {}


def test_validation_scores_in_eval_mode_on_schedule_and_leaves_training_unchanged(tmp_path):
    cfg = TrainConfig(steps=5, batch_size=1, warmup=1, val_every=2)
    torch.manual_seed(0)
    plain = _Noisy()
    Trainer(cfg, lambda *_: {}, plain, tmp_path / "plain", {"x": 1}).fit()
    torch.manual_seed(0)
    model, calls, steps = _Noisy(), [], []

    def batches(step, rank, world):
        steps.append(step)
        return {}

    def validate(net):
        calls.append((len(steps), net.training))  # after how many steps, and in which mode
        torch.rand(1)  # a scorer that draws from the global generator must not change training either
        return {"distance": net(None, None)[0]}

    metrics = Trainer(cfg, batches, model, tmp_path / "validated", {"x": 1}, validate=validate).fit()
    assert calls == [(2, False), (4, False), (5, False)] and model.training  # every 2 steps and at the end, in eval mode; training mode back after
    assert metrics["val/distance"] == pytest.approx(float((model.w.detach() ** 2).sum()))
    assert torch.equal(model.w, plain.w)


def test_damaged_checkpoint_gives_a_user_error(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / FILENAME, model, None, 3, {"a": 1})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="damaged"):
        read_metadata(path)


@pytest.mark.parametrize("flag, value", [("--model.clip-frames", "1"), ("--model.frame-skip", "0"),
                                         ("--train.log-every", "0"), ("--train.device", "cuda")])
def test_bad_training_options_give_one_line_errors(tiny_dataset, tmp_path, capsys, flag, value):
    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(pretrain_argv(tiny_dataset, tmp_path / "run", 2, extra=[flag, value])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jepa: error:") and "\n" not in err


class _DeferredSpread(torch.nn.Module):
    """A model whose collapse watch is a deferred diagnostic, counting the steps that call it."""

    def __init__(self):
        super().__init__()
        self.w, self.calls = torch.nn.Parameter(torch.ones(3)), 0

    def forward(self, batch, generator):
        def spread():
            self.calls += 1
            return {"collapse/relative_std": torch.tensor(1e-5), "collapse/effective_rank": torch.tensor(9.0)}
        return (self.w**2).sum(), {"loss/w": self.w.detach().sum(), "collapse": spread}


def test_a_deferred_diagnostic_runs_on_logged_steps_only_and_is_judged(tmp_path):
    model = _DeferredSpread()
    trainer = Trainer(TrainConfig(steps=7, batch_size=1, log_every=3, warmup=1), lambda step, rank, world: {}, model, tmp_path, {"x": 1})
    metrics = trainer.fit()
    assert model.calls == 3  # steps 3, 6 and the last, 7
    assert metrics["collapsed"] and metrics["collapse/relative_std"] == pytest.approx(1e-5)
    assert resolve_metrics({"a": torch.tensor(2.0), "b": lambda: {"c": torch.tensor(1.0), "d": lambda: {"e": 3}}}) == {"a": 2.0, "c": 1.0, "e": 3.0}
