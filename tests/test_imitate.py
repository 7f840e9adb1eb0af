"""`jepa imitate` and `jepa policy-eval` end to end with tiny budgets: each policy's defaults and
flags, training and resuming, held-out scoring, `--candidates`, a pretrained encoder, old runs,
reproducible evaluation, and one-line errors for bad input."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import TINY, write_dataset

from agents.chunk_policy import ChunkPolicyConfig
from agents.demonstrations import Demonstrations
from agents.moment_policy import MomentPolicy, MomentPolicyConfig
from agents.mpc import PolicyPrior
from agents.policy import ChunkActor, Vote
from envs import task_spec
from envs.dataset import EpisodeDataset
from experiments.cli import main
from experiments.imitate_commands import MOMENTS_TRAIN, TRANSFORMER_TRAIN, ImitateMoments
from experiments.policy_eval_commands import closest_median
from experiments.protocol import run_lockstep
from experiments.runs import load_policy
from infra.errors import UserError


def test_each_policy_starts_from_its_own_defaults_and_given_flags_win():
    from experiments.cli import parse

    given = ["--train.steps", "3000", "--model.history", "1", "--train.seed", "3"]  # the transformer family's defaults, asked for
    moments = parse(["imitate", "--data", "d", "--out", "o", "--policy", "moments", *given])
    assert isinstance(moments, ImitateMoments) and moments.model.kind == "moments"
    assert (moments.train.steps, moments.model.history, moments.train.seed) == (3000, 1, 3)
    assert moments.train == dataclasses.replace(MOMENTS_TRAIN, steps=3000, seed=3)
    assert moments.model == dataclasses.replace(MomentPolicyConfig(), history=1)
    assert parse(["imitate", "moments", "--data", "d", "--out", "o", *given]) == moments  # the subcommand itself
    assert moments.candidates == 3 and parse(["imitate", "moments", "--data", "d", "--out", "o", "--candidates", "1"]).candidates == 1
    for argv in (["--policy=act"], ["act"], ["--policy", "act", "act"]):
        act = parse(["imitate", *argv, "--data", "d", "--out", "o"])
        assert act.train == TRANSFORMER_TRAIN and act.model == ChunkPolicyConfig(kind="act") and act.candidates == 1
    assert parse(["imitate", "--data", "d", "--out", "o"]).model.kind == "act-jepa"  # no policy named
    with pytest.raises(UserError, match="contradicts the subcommand act"):
        parse(["imitate", "--policy", "bc", "act", "--data", "d", "--out", "o"])


def test_a_flag_of_another_policy_family_is_refused(capsys):
    with pytest.raises(SystemExit):  # tyro names the flag
        main(["imitate", "--policy", "moments", "--data", "d", "--out", "o", "--model.waypoints", "3"])
    assert "--model.waypoints" in capsys.readouterr().err


def test_runs_recorded_with_one_config_for_every_kind_still_load(trained_policy, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from worldmodel.checkpoint import read_metadata

    old = shutil.copytree(trained_policy, tmp_path / "old")
    path = old / "policy" / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    config = json.loads(meta["config"])
    config["model"] |= {"goal_min_correlation": 0.9}  # a field of another kind, as the shared config recorded it
    save_file(tensors, str(path), metadata=meta | {"config": json.dumps(config)})
    assert read_metadata(path)["config"]["model"]["goal_min_correlation"] == 0.9
    policy, _ = load_policy(old)
    assert policy.cfg == load_policy(trained_policy)[0].cfg


def test_imitate_and_policy_eval_end_to_end(demos, trained_policy, tmp_path, capsys):
    capsys.readouterr()
    argv = ["policy-eval", "--run", str(trained_policy), "--episodes", "2", "--seeds", "0,1", "--steps", "6", "--parallel", "2", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"success_rate", "ci95", "episodes", "seeds", "floor", "ceiling"} <= set(result)
    assert result["episodes"] == 2 and result["seeds"] == [0, 1] and result["n"] == 4 and result["closest_median"] > 0  # two-room reports its goal distance
    assert (trained_policy / "policy_eval" / "two-room_act-jepa_execute2_seed0.mp4").exists()
    assert (trained_policy / "policy_eval" / "two-room_execute2_seeds0-1_x2_steps6.json").exists()
    checkpoint = (trained_policy / "policy" / "checkpoint.safetensors").read_bytes()
    assert main(["imitate", "--data", str(demos), "--out", str(trained_policy), "--train.steps", "4", *TINY]) == 0
    assert (trained_policy / "policy" / "checkpoint.safetensors").read_bytes() == checkpoint  # finished: nothing redone
    for kind, extra in (("act", ["--model.chunk", "1", "--model.execute", "1"]), ("bc", [])):  # act-jepa's stride check is not act's
        assert main(["imitate", "--data", str(demos), "--policy", kind, "--out", str(tmp_path / kind), "--train.steps", "2", *TINY, *extra]) == 0
        assert main(["policy-eval", "--run", str(tmp_path / kind), "--episodes", "1", "--seeds", "0", "--steps", "3", "--no-baselines"]) == 0


def test_frames_drawn_otherwise_than_now_are_flagged_by_imitate_and_policy_eval(demos, trained_policy, tmp_path, capsys, monkeypatch):
    import shutil

    import h5py

    from envs.two_room import TwoRoomEnv

    def warnings():
        return [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]

    evaluate = ["policy-eval", "--run", str(trained_policy), "--episodes", "1", "--seeds", "0", "--steps", "2", "--no-baselines", "--no-videos"]
    capsys.readouterr()
    assert main(evaluate) == 0
    assert warnings() == []  # the same drawing as in training: silent
    unrecorded = shutil.copytree(demos, tmp_path / "unrecorded")
    with h5py.File(unrecorded / "episodes.h5", "a") as f:
        del f.attrs["render_revision"]  # as written before revisions were recorded
    assert main(["imitate", "--data", str(unrecorded), "--out", str(tmp_path / "old"), "--train.steps", "1", *TINY]) == 0
    assert warnings() == []  # two-room has only ever had one drawing
    monkeypatch.setattr(TwoRoomEnv, "render_revision", 1)  # as if two-room were drawn differently since
    assert main(evaluate) == 0
    warning = warnings()
    assert len(warning) == 1 and f"the policy in {trained_policy} learned from two-room frames drawn at render revision 0" in warning[0]
    assert "draws them at revision 1" in warning[0]
    assert main(["imitate", "--data", str(unrecorded), "--out", str(tmp_path / "run"), "--train.steps", "1", *TINY]) == 0
    assert f"the dataset {unrecorded} holds two-room frames drawn before render revisions were recorded" in warnings()[0]
    assert json.loads((tmp_path / "run" / "policy" / "config.json").read_text())["render_revision"] is None  # recorded as unknown


def test_held_out_demonstrations_are_left_out_of_training_and_score_the_policy(demos, tmp_path, capsys, monkeypatch):
    dataset = EpisodeDataset(demos)
    split = Demonstrations(dataset, held_out=1)
    assert list(split.episodes) == [0, 1, 2] and list(split.held_out) == [3]
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--policy", "act", "--train.steps", "4", "--train.val-every", "2",
                 "--val-episodes", "1", "--model.waypoints", "3", *TINY]) == 0
    metrics = json.loads((run / "policy" / "metrics.json").read_text())
    assert {"val/total", "val/action_l1", "val/waypoint"} <= set(metrics) and "held-out" in capsys.readouterr().out
    config = json.loads((run / "policy" / "config.json").read_text())
    assert config["demonstrations"] == 3 and config["val_episodes"] == 1
    policy, config = load_policy(run)  # the last score is the final policy's on the held-out episode's fixed windows
    assert split.scorer(policy.window_spec(), config["train"]["seed"], held_out=True)(policy)["waypoint"] == pytest.approx(metrics["val/waypoint"], rel=1e-5)


def test_lockstep_reports_how_near_each_episode_came_to_its_goal():
    two_room = task_spec("two-room").env_class

    class NoGoalDistance(two_room):  # a task whose info reports success alone, as Meta-World's does
        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            return obs, reward, terminated, truncated, {"is_success": info["is_success"]}

    envs = [two_room(), two_room(), NoGoalDistance()]
    expert, seen = task_spec("two-room").expert_class(envs[0]), []

    def act(obs, running):  # env 0: the expert for 3 steps, then straight back; the others stand still
        seen.append(running[0].goal_distance())
        towards = expert()
        return np.stack([towards if len(seen) <= 3 else -towards, np.zeros(2), np.zeros(2)])

    success, closest = run_lockstep(envs, [1, 2, 3], 8, act)
    start = envs[1].reset(seed=2)[1]["goal_distance"]
    assert not success.any() and closest[0] == pytest.approx(min(seen[1:] + [envs[0].goal_distance()]))
    assert closest[0] < envs[0].goal_distance() and closest[0] < seen[0]  # the nearest, neither the last nor the start
    assert closest[1] == pytest.approx(start) and np.isnan(closest[2])
    assert closest_median([0.5, 2.0, 3.0]) == 2.0 and closest_median([0.5, float("nan")]) is None
    for env in envs:
        env.close()


@pytest.mark.parametrize("val_episodes", [1, 0])
def test_candidates_keep_the_one_with_the_lowest_held_out_or_fitted_loss(demos, tmp_path, capsys, val_episodes):
    run = tmp_path / "run"
    argv = ["imitate", "--data", str(demos), "--out", str(run), "--policy", "act", "--train.steps", "4", "--train.seed", "5",
            "--val-episodes", str(val_episodes), "--candidates", "3", *TINY]
    assert main(argv) == 0
    assert "training seed" in capsys.readouterr().out
    selection = json.loads((run / "candidates" / "selection.json").read_text())
    key = "val/total" if val_episodes else "fit/total"  # held out, or the demonstrations each candidate learned from
    assert selection["chosen_by"] == key
    folders = {seed: run / "candidates" / f"seed{seed}" for seed in (5, 6, 7)}
    totals = {int(k): v[key] for k, v in selection["candidates"].items()}
    assert sorted(totals) == [5, 6, 7] and len(set(totals.values())) == 3
    assert totals == {seed: json.loads((folder / "policy" / "metrics.json").read_text())[key] for seed, folder in folders.items()}
    dataset = EpisodeDataset(demos)
    split = Demonstrations(dataset, held_out=val_episodes)
    for seed, folder in folders.items():  # every candidate scored on the same windows: those of the first seed
        policy, config = load_policy(folder)
        scored = split.scorer(policy.window_spec(), 5, held_out=bool(val_episodes))(policy)["total"]
        assert scored == pytest.approx(totals[seed], rel=1e-5)
    best = min(totals, key=totals.get)
    assert selection["selected_seed"] == best
    chosen = (folders[best] / "policy" / "checkpoint.safetensors").read_bytes()
    assert (run / "policy" / "checkpoint.safetensors").read_bytes() == chosen
    assert load_policy(run)[1]["train"]["seed"] == best
    written = {seed: (folder / "policy" / "checkpoint.safetensors").stat().st_mtime_ns for seed, folder in folders.items()}
    assert main(argv) == 0  # the same command again: every candidate resumes finished, the same one is kept
    assert {seed: (folder / "policy" / "checkpoint.safetensors").stat().st_mtime_ns for seed, folder in folders.items()} == written
    assert json.loads((run / "candidates" / "selection.json").read_text()) == selection
    assert (run / "policy" / "checkpoint.safetensors").read_bytes() == chosen and not list(run.glob(".policy*"))


class FixedProposal(ChunkActor):
    """A stub member that proposes chunks full of one value (the second of two hypotheses is the most likely)."""

    def __init__(self, value: float):
        super().__init__(ChunkPolicyConfig(kind="act", action_dim=2, execute=2))
        self.value, self.seen = value, 0

    def observe(self, obs: dict) -> None:
        self.seen += 1

    def predict_action_hypotheses(self, obs: dict, observe: bool = True):
        if observe:
            self.observe(obs)
        batch = len(obs["pixels"])
        hypotheses = torch.stack([torch.full((batch, self.cfg.horizon, 2), -1.0), torch.full((batch, self.cfg.horizon, 2), self.value)], 1)
        return hypotheses, torch.tensor([[0.0, 1.0]]).expand(batch, 2)


def test_a_vote_executes_the_members_medoid_proposal():
    members = [FixedProposal(value) for value in (0.1, 0.5, 0.12)]  # 0.12 lies nearest the others
    vote = Vote(members)
    obs = {"pixels": np.zeros((3, 8, 8, 3), np.uint8)}
    hypotheses, logits = vote.predict_action_hypotheses(obs)
    assert hypotheses.shape == (3, 6, 8, 2) and torch.equal(logits.argmax(1), torch.zeros(3, dtype=torch.long))
    assert hypotheses[0, :, 0, 0].tolist() == pytest.approx([0.12, 0.1, 0.5, -1, -1, -1])  # by agreement, then the members' others
    assert [vote.select_action(obs)[0, 0].item() for _ in range(3)] == pytest.approx([0.12] * 3)
    assert [member.seen for member in members] == [4, 4, 4]  # every member observes every step (the queue runs 2 per query)
    assert vote.cfg.members == 3
    with pytest.raises(UserError, match="no loss of its own"):
        vote.windows_on(None)
    prior = PolicyPrior(vote, np.zeros((8, 8, 3), np.uint8))  # a planner's prior: every member's hypotheses, the medoid first
    blocks, covered = prior.blocks({"pixels": np.zeros((8, 8, 3), np.uint8), "proprio": np.zeros(2, np.float32)}, 2, 5, True)
    assert covered == 4 and blocks.shape == (6, 4, 2) and blocks[:, 0, 0].tolist() == pytest.approx([0.12, 0.1, 0.5, -1, -1, -1])


def test_the_moments_policy_acts_by_the_vote_of_three_training_seeds(demos, tmp_path, capsys):
    run, tiny = tmp_path / "run", ["--train.steps", "3", "--train.batch-size", "8", "--train.warmup", "1", "--model.width", "16"]
    argv = ["imitate", "--data", str(demos), "--out", str(run), "--policy", "moments", "--train.seed", "4", *tiny]
    assert main(argv) == 0
    assert "the vote of training seeds 4, 5, 6" in capsys.readouterr().out
    vote, config = load_policy(run)
    assert isinstance(vote, Vote) and config["model"]["members"] == 3 and config["voters"] == [4, 5, 6]
    for member, seed in zip(vote.members, (4, 5, 6)):  # the candidates' own weights
        alone, _ = load_policy(run / "candidates" / f"seed{seed}")
        assert all(torch.equal(a, b) for a, b in zip(member.state_dict().values(), alone.state_dict().values()))
    assert not (run / "candidates" / "vote").exists()  # staged, then moved into OUT/policy
    assert main(["policy-eval", "--run", str(run), "--episodes", "2", "--seeds", "0", "--steps", "4", "--no-baselines", "--no-videos"]) == 0
    assert main(argv) == 0 and list((run / "policy_eval").glob("*.json"))  # rerun: the same vote, its evaluation kept
    assert main([*argv, "--no-vote"]) == 0 and not (run / "policy_eval").exists()  # the lowest-loss one instead: stale evaluations go
    kept = json.loads((run / "candidates" / "selection.json").read_text())["selected_seed"]
    assert isinstance(load_policy(run)[0], MomentPolicy) and load_policy(run)[1]["train"]["seed"] == kept
    single = tmp_path / "single"
    assert main(["imitate", "--data", str(demos), "--out", str(single), "--policy", "moments", "--candidates", "1", *tiny]) == 0
    assert isinstance(load_policy(single)[0], MomentPolicy) and not (single / "candidates").exists()


def test_under_torchrun_only_a_single_run_trains(demos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # every command still parses (the moments policy's default trains three runs)
    assert main(["imitate", "--data", str(demos), "--out", str(tmp_path / "run"), "--policy", "moments"]) == 2
    assert "run it without torchrun, or with --candidates 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_candidates_refuse_a_run_folder_whose_policy_was_trained_alone(demos, trained_policy, capsys):
    before = (trained_policy / "policy" / "checkpoint.safetensors").read_bytes()
    assert main(["imitate", "--data", str(demos), "--out", str(trained_policy), "--val-episodes", "1", "--candidates", "2", *TINY]) == 2
    assert "trained without --candidates" in capsys.readouterr().err
    assert (trained_policy / "policy" / "checkpoint.safetensors").read_bytes() == before


def test_imitate_starts_from_a_pretrained_encoder(demos, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    from envs.two_room import TwoRoomEnv

    pretrain = ["--model.encoder.width", "16", "--model.clip-frames", "3", "--model.frame-skip", "2", "--train.batch-size", "8",
                "--train.warmup", "2", "--train.steps", "2"]
    assert main(["pretrain", "--data", str(demos), "--out", str(tmp_path / "enc"), *pretrain]) == 0
    run = tmp_path / "run"
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--encoder", str(tmp_path / "enc"), "--train.steps", "1",
                 "--train.lr", "0", "--model.goal-encoder", *TINY]) == 0
    encoder = load_file(str(tmp_path / "enc" / "encoder" / "checkpoint.safetensors"))
    policy = load_file(str(run / "policy" / "checkpoint.safetensors"))
    keys = [k for k in encoder if k.startswith("model/encoder.")]
    assert keys and all(torch.equal(policy[k], encoder[k]) for k in keys)  # lr 0: still the pretrained encoder
    assert all(torch.equal(policy[k.replace("model/", "model/goal_encoder.")], encoder[k]) for k in keys)  # the goal's own one too
    assert json.loads((tmp_path / "enc" / "encoder" / "config.json").read_text())["render_revision"] == 0
    monkeypatch.setattr(TwoRoomEnv, "render_revision", 1)  # as if two-room were drawn differently since the pretraining
    capsys.readouterr()
    assert main(["imitate", "--data", str(demos), "--out", str(tmp_path / "later"), "--encoder", str(tmp_path / "enc"), "--train.steps", "1", *TINY]) == 0
    assert f"the encoder in {tmp_path / 'enc'} learned from two-room frames drawn at render revision 0" in capsys.readouterr().err


def test_evaluation_episodes_are_reproducible(trained_policy, capsys):
    argv = ["policy-eval", "--run", str(trained_policy), "--episodes", "2", "--seeds", "3", "--steps", "5", "--no-videos", "--json"]
    results = []
    for _ in range(2):
        capsys.readouterr()
        assert main(argv) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]


@pytest.mark.parametrize("argv, message", [
    (["policy-eval", "--run", "{empty}"], "jepa imitate"),
    (["policy-eval", "--run", "{run}", "--task", "cube"], "learned two-room"),
    (["policy-eval", "--run", "{run}", "--seeds", "1,1"], "--seeds"),
    (["policy-eval", "--run", "{run}", "--execute", "9"], "execute (actions run per chunk) must be from 1 to the chunk"),
    (["imitate", "--data", "{empty}", "--out", "{empty}"], "jepa collect"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--policy", "diffusion"], "--policy must be one of"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--val-episodes", "4"], "--val-episodes must be from 0 to 3"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--encoder", "{empty}"], "jepa pretrain"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--candidates", "0"], "--candidates must be at least 1"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--model.colour-moments", "1"], "colour-moments is a palette's size"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--policy", "moments", "--model.goal-min-correlation", "2"], "goal-min-correlation is a correlation's threshold"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--policy", "moments", "--model.colour-moments", "1"], "reads a palette of 2 or more colours"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--policy", "moments", "--model.jepa-weight", "-1"], "jepa-weight is a loss's weight"),
    (["collect", "--task", "metaworld:fly-v3", "--out", "{empty}"], "unknown Meta-World task"),
    (["collect", "--task", "reacher", "--policy", "sb3:{empty}", "--out", "{empty}", "--episodes", "1"], "jepa train-expert"),
    (["train-expert", "--task", "reacher", "--algo", "dqn", "--out", "{empty}"], "--algo must be one of"),
])
def test_bad_input_gives_one_line_errors(demos, trained_policy, tmp_path_factory, capsys, argv, message):
    empty = tmp_path_factory.mktemp("empty")
    before = sorted(p.name for p in (trained_policy / "policy").iterdir())
    argv = [a.format(data=demos, run=trained_policy, empty=empty) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in (trained_policy / "policy").iterdir()) == before



def test_the_tasks_declared_recipe_fills_what_no_flag_sets():
    from envs.cube import CubeEnv
    from envs.push_t import PushTEnv, PushTFixedGoalEnv
    from envs.two_room import TwoRoomEnv

    pusht = MomentPolicyConfig(kind="moments").for_task(PushTEnv)
    assert (pusht.square_symmetry, pusht.jepa_weight, pusht.history, pusht.modes, pusht.colour_moments) == (True, 1.0, 2, 8, 4)
    cube = MomentPolicyConfig().for_task(CubeEnv)
    assert (cube.square_symmetry, cube.jepa_weight, cube.history, cube.colour_moments) == (False, 0.0, 1, 6)
    assert MomentPolicyConfig(jepa_weight=0.5).for_task(PushTEnv).jepa_weight == 0.5  # a flag wins
    assert not MomentPolicyConfig(square_symmetry=False).for_task(PushTEnv).square_symmetry
    assert MomentPolicyConfig().for_task(PushTFixedGoalEnv).jepa_weight == 0.0  # one goal: neither symmetric nor declared
    assert MomentPolicyConfig().for_task(TwoRoomEnv).left_to_task == []
    assert ChunkPolicyConfig(kind="act").for_task(PushTEnv) == ChunkPolicyConfig(kind="act")  # symmetric, and moments' recipe is not act's
    assert not ChunkPolicyConfig(kind="act").for_task(TwoRoomEnv).square_symmetry  # a task that declares no symmetry
    with pytest.raises(UserError, match="leaves jepa_weight to its task"):
        MomentPolicy(dataclasses.replace(pusht, jepa_weight=None, action_dim=2))


@pytest.mark.parametrize("flags, recorded", [([], (True, 1.0)), (["--model.jepa-weight", "0", "--model.no-square-symmetry"], (False, 0.0))])
def test_imitate_records_the_recipe_it_used(tmp_path, flags, recorded):
    data = write_dataset(tmp_path / "pt", task="push-t", policy="expert", steps=30, episodes=2)
    run = tmp_path / "run"
    assert main(["imitate", "--data", str(data), "--out", str(run), "--policy", "moments", "--no-successful-only", "--train.steps", "2",
                 "--train.batch-size", "8", "--train.warmup", "1", *flags]) == 0
    model = json.loads((run / "policy" / "config.json").read_text())["model"]
    assert (model["square_symmetry"], model["jepa_weight"]) == recorded
