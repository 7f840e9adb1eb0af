"""The imitation benchmark scripts (experiments/benchmarks/) on tiny runs: they run, and read
what they claim to read."""

import json

import numpy as np
import pytest
from conftest import TINY, write_dataset

from agents.demonstrations import Demonstrations
from envs.dataset import EpisodeDataset
from experiments.cli import main
from experiments.protocol import wilson
from experiments.runs import load_policy
from infra.errors import UserError


def test_policy_step_cost_times_every_variant_and_the_window_draws(tmp_path):
    from experiments.benchmarks.policy_step_cost import VARIANTS, draw_seconds, step_seconds

    assert all(min(step_seconds(cfg, steps=1, batch=2)) > 0 for cfg in VARIANTS.values())  # the step and its collapse watch
    draws = draw_seconds(EpisodeDataset(write_dataset(tmp_path / "pt", task="push-t", policy="expert", steps=30, episodes=2)), steps=1, batch=2)
    assert len(draws) == 2 and all(s > 0 for s in draws.values())  # push-t: as recorded and turned


def test_candidate_choice_pools_each_runs_evaluations_and_refuses_mismatched_ones(demos, trained_policy, tmp_path):
    from experiments.benchmarks.candidate_choice import choose

    runs = {seed: tmp_path / f"s{seed}" for seed in (3, 4, 6)}
    for seed, run in runs.items():
        assert main(["imitate", "--data", str(demos), "--policy", "act", "--out", str(run), "--train.steps", "2", "--train.seed", str(seed), *TINY]) == 0
        for seeds in (["0,1"] if seed == 3 else ["0", "1"]) + ["0"] * (seed == 4):  # seed 3: one file of two seeds; seed 4: seed 0 again, rewriting its file
            evaluate = ["policy-eval", "--run", str(run), "--episodes", "2", "--seeds", seeds, "--steps", "3", "--no-baselines", "--no-videos"]
            assert main(evaluate) == 0
    assert main(evaluate + ["--ensemble", "0.01"]) == 0  # another execution of seed 6: left out
    for path, rate in ((runs[3], 0.75), (runs[4], 1.0), (runs[6], 0.0)):  # two-room's 3 steps never succeed: rates set by hand
        for written in (path / "policy_eval").glob("*execute*.json"):
            written.write_text(json.dumps(json.loads(written.read_text()) | {"success_rate": rate}))
    result = choose([runs[3], runs[4], runs[6]], 3)
    assert [r["success"] for r in result["runs"]] == [{"0-1": 0.75}, {"0": 1.0, "1": 1.0}, {"0": 0.0, "1": 0.0}]
    totals = {r["seed"]: r["own_total"] for r in result["runs"]}
    rates = {3: 0.75, 4: 1.0, 6: 0.0}
    kept = lambda subset: rates[min(subset, key=totals.get)]  # noqa: E731
    assert result["expected"][1] == pytest.approx(7 / 12, abs=1e-4) and result["expected"][3] == kept((3, 4, 6))
    assert result["expected"][2] == pytest.approx((kept((3, 4)) + kept((3, 6)) + kept((4, 6))) / 3, abs=1e-4)
    assert result["command"] is None and result["window_seed"] == 3  # seeds 3, 4, 6: no one command trains them
    command = choose([runs[3], runs[4]], 2)["command"]
    assert command["seeds"] == [3, 4] and command["episodes"] == 4 and command["ci95"] == list(wilson(round(4 * rates[command["kept_seed"]]), 4))

    def refused(given: list, message: str) -> None:
        with pytest.raises(UserError, match=message):
            choose(given, 3)

    refused([runs[3], trained_policy], "differ in more than the training seed")
    refused([runs[3], runs[3]], "share a training seed")
    refused([runs[3]], "two or more runs")
    next((runs[6] / "policy_eval").glob("*execute*seeds1_*")).unlink()
    refused([runs[3], runs[6]], r"evaluations differ \(evaluation seeds \[\[0, 1\], \[0\]\]")
    assert main(["policy-eval", "--run", str(runs[4]), "--episodes", "2", "--seeds", "0,1", "--steps", "3", "--no-baselines", "--no-videos"]) == 0
    refused([runs[3], runs[4]], "two evaluations of seed 0")
    next((runs[6] / "policy_eval").glob("*execute*.json")).write_text("{")
    refused([runs[3], runs[6]], "is not a policy-eval result")


@pytest.mark.parametrize("flags, message", [(["--waypoint-weight", "-1"], "waypoint-weight is not negative"), (["--candidates", "0"], "--candidates must be at least 1"),
                                           (["--policies", "act,diffusion"], "policy must be one of")])
def test_imitation_table_checks_its_options_before_collecting(tmp_path, monkeypatch, flags, message):
    from experiments.benchmarks import imitation

    monkeypatch.setattr("sys.argv", ["imitation.py", "--task", "two-room", "--out", str(tmp_path / "table"), *flags])
    with pytest.raises(SystemExit, match=message):
        imitation.main()
    assert not (tmp_path / "table").exists()  # no demonstrations were collected for a table that could not be trained


def test_object_probe_scores_learned_and_learnable_object_positions(trained_policy, tmp_path):
    from experiments.benchmarks.object_probe import probe

    with pytest.raises(UserError, match="has no object to probe"):
        probe(trained_policy, frames=4, fresh=3, steps=2)
    for task, variables, episodes in (("metaworld:push-v3", 2, 2), ("push-t", 4, 5)):  # the object's x, y; the block's x, y, cos, sin
        demos, run = tmp_path / task / "demos", tmp_path / task / "run"
        assert main(["collect", "--task", task, "--policy", "expert", "--episodes", str(episodes), "--steps", "6", "--out", str(demos)]) == 0
        assert main(["imitate", "--data", str(demos), "--out", str(run), "--policy", "act", "--no-successful-only", "--train.steps", "2",
                     "--model.goal-encoder", "--model.goal-waypoints", "-1", *TINY]) == 0
        scores = probe(run, frames=4, fresh=3, steps=2)
        assert all(len(scores[k]) == variables and np.isfinite(scores[k]).all() for k in ("learned", "learnable"))
        if episodes < 5:
            assert scores["goal"] is None  # too few goals for a read-out
        else:  # PushT's goals are full states, read as the block's pose
            assert len(scores["goal"]) == variables and np.isfinite(scores["goal"]).all()


def test_imitation_profile_times_a_run_and_lists_where_its_time_goes(tmp_path, monkeypatch, capsys):
    from experiments.benchmarks import imitation_profile

    data = write_dataset(tmp_path / "pt", task="push-t", policy="expert", steps=30, episodes=2)
    monkeypatch.setattr("sys.argv", ["imitation_profile.py", "--data", str(data), "--steps", "30", "--rows", "3", "--", "--model.width", "32", "--no-successful-only"])
    imitation_profile.main()
    lines = capsys.readouterr().out.splitlines()
    timed = json.loads(lines[0])
    assert timed["steps"] == 30 and timed["steps_per_s"] > 0 and 0 < timed["data_fraction_last_log"] < 1
    assert any("Self CPU" in line for line in lines)  # the profiler's table
    monkeypatch.setattr("sys.argv", ["imitation_profile.py", "--data", str(tmp_path / "none"), "--steps", "30"])
    with pytest.raises(SystemExit, match="no dataset"):
        imitation_profile.main()


def test_heldout_losses_scores_a_run_on_another_collection_or_on_its_own(demos, tmp_path, capsys, monkeypatch):
    from experiments.benchmarks import heldout_losses

    run = tmp_path / "run"
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--policy", "act", "--train.steps", "4", "--val-episodes", "1", "--model.waypoints", "3", *TINY]) == 0
    other = write_dataset(tmp_path / "other", policy="expert", steps=40, seed=6)
    monkeypatch.setattr("sys.argv", ["heldout_losses", "--data", str(other), "--run", str(run)])  # any run on another collection
    capsys.readouterr()
    heldout_losses.main()
    assert set(json.loads(capsys.readouterr().out)["held_out"]) == {"total", "action_l1", "waypoint"}
    monkeypatch.setattr("sys.argv", ["heldout_losses", "--run", str(run), "--seed", "3"])  # on its own demonstrations, as --candidates ranks
    heldout_losses.main()
    policy, _ = load_policy(run)
    own = Demonstrations(EpisodeDataset(demos), held_out=1).scorer(policy.window_spec(), 3, held_out=False)(policy)
    assert json.loads(capsys.readouterr().out)["own"]["total"] == pytest.approx(own["total"], abs=1e-4)
    monkeypatch.setattr("sys.argv", ["heldout_losses", "--data", str(demos), "--run", str(run)])
    with pytest.raises(SystemExit, match="score it on another collection"):
        heldout_losses.main()


@pytest.mark.parametrize("policy, val_episodes", [("act", 1), ("act", 0), ("moments", 0)])
def test_candidate_choice_keeps_what_the_command_kept(demos, tmp_path, policy, val_episodes):
    from experiments.benchmarks.candidate_choice import choose  # reads the choice off runs trained one seed at a time

    run, tiny = tmp_path / "run", TINY if policy == "act" else ["--model.width", "16", "--train.batch-size", "8", "--train.warmup", "2", "--no-vote"]
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--policy", policy, "--train.steps", "4", "--train.seed", "5",
                 "--val-episodes", str(val_episodes), "--candidates", "3", *tiny]) == 0
    selection = json.loads((run / "candidates" / "selection.json").read_text())
    folders = [run / "candidates" / f"seed{seed}" for seed in (5, 6, 7)]
    for folder in folders:
        assert main(["policy-eval", "--run", str(folder), "--episodes", "2", "--seeds", "0", "--steps", "3", "--no-baselines", "--no-videos"]) == 0
    if val_episodes:
        with pytest.raises(UserError, match="held demonstrations out"):
            choose(folders, 3)
    else:  # it keeps what the command kept, on the same scores
        result = choose(folders, 3)
        assert result["command"]["kept_seed"] == selection["selected_seed"] and result["window_seed"] == 5
        totals = {int(k): v["fit/total"] for k, v in selection["candidates"].items()}
        assert {r["seed"]: r["own_total"] for r in result["runs"]} == pytest.approx(totals, rel=1e-4)


def test_imitation_table_trains_each_policy_on_each_demonstration_set(tmp_path, monkeypatch, capsys):
    from experiments.benchmarks import imitation

    out = tmp_path / "table"
    monkeypatch.setattr("sys.argv", ["imitation", "--task", "two-room", "--out", str(out), "--policies", "moments", "--demos", "3",
                                     "--steps", "2", "--episodes", "2", "--seeds", "0", "--demo-seeds", "1,2", "--no-baselines"])
    imitation.main()
    table = capsys.readouterr().out
    assert "collection seeds 1,2" in table and "| moments |" in table
    per_set = [json.loads(next((out / f"moments_s{s}" / "policy_eval").glob("*.json")).read_text())["success_rate"] for s in (1, 2)]
    assert ", ".join(f"{rate:.1%}" for rate in per_set) in table  # each set's own evaluation, in order
    assert [EpisodeDataset(out / f"demos_s{s}").attrs["seed"] for s in (1, 2)] == [1, 2]
    assert "| n/a | n/a |" in table  # --no-baselines: neither floor nor demonstrator was run
