"""Imitation: the policy contract (every kind), chunked and ensembled execution, the demonstration
windows, and `imitate` / `policy-eval` / `train-expert` / Meta-World end to end with tiny budgets."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from agents.moment_policy import MomentPolicy
from agents.policy import MIN_GOALS, POLICY_KINDS, ChunkPolicy, PolicyConfig, masked_l1
from envs import make_task, task_spec
from envs.dataset import EpisodeDataset
from envs.push_t import PushTEnv
from envs.symmetry import ELEMENTS, turn_images, turn_vectors
from experiments.cli import main
from experiments.imitate_commands import closest_median, demonstration_episodes, demonstration_windows, last_actions, load_policy, moment_features, square_symmetry, window_scorer
from experiments.protocol import run_lockstep, wilson
from infra.errors import UserError
from worldmodel.encoders import MOMENTS, EncoderConfig
from worldmodel.trainer import resolve_metrics

TINY = ["--model.width", "16", "--model.depth", "1", "--model.heads", "2", "--model.encoder.width", "8", "--model.chunk", "4",
        "--model.execute", "2", "--train.batch-size", "8", "--train.warmup", "2", "--train.log-every", "2"]


def tiny_policy(kind: str, **kw) -> ChunkPolicy:
    torch.manual_seed(0)
    cfg = PolicyConfig(kind=kind, chunk=4, execute=2, width=16, depth=1, heads=2, action_dim=2, proprio_dim=3,
                       encoder=EncoderConfig(kind="conv", width=8, patch=8, image_size=32), **kw)
    return ChunkPolicy(cfg)


def random_batch(policy: ChunkPolicy, b: int = 6) -> dict:
    cfg, g = policy.cfg, torch.Generator().manual_seed(1)
    image = lambda *shape: torch.randint(0, 256, (*shape, 32, 32, 3), dtype=torch.uint8, generator=g)
    m, w, v = len(cfg.future_offsets), len(cfg.waypoints), len(cfg.goal_waypoints)
    return {"frames": image(b, cfg.history), "goal": image(b), "proprio": torch.randn(b, 3, generator=g),
            "actions": torch.rand(b, cfg.horizon, 2, generator=g) * 2 - 1, "action_valid": torch.ones(b, cfg.horizon, dtype=torch.bool),
            "future": image(b, m), "future_valid": torch.ones(b, m, dtype=torch.bool),
            "waypoints": torch.randn(b, w, 3, generator=g), "waypoints_valid": torch.ones(b, w, dtype=torch.bool),
            "goal_waypoints": torch.randn(b, v, 3, generator=g), "goal_waypoints_valid": torch.ones(b, v, dtype=torch.bool)}


@pytest.mark.parametrize("kind, extra", [(kind, {}) for kind in POLICY_KINDS if kind != "moments"] + [("act-jepa", {"image_tokens": 2}), ("act", {"waypoints": (3, -1), "goal_image": False}),
                                                    ("act-jepa", {"waypoints": (3,), "goal_waypoints": (-1,), "goal_encoder": True, "image_tokens": 2}),
                                                    ("act-jepa", {"colour_moments": 3, "goal_encoder": True})])
def test_policy_contract_and_it_fits_a_batch(kind, extra):
    policy = tiny_policy(kind, history=2, shift=0, **extra)  # unshifted: random images are hard enough to fit
    batch = random_batch(policy)
    opt = torch.optim.Adam(policy.parameters(), 3e-3)
    first = None
    for step in range(150):
        loss, metrics = policy(batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.after_step(step + 1, 150)
        first = first or {k: v.item() for k, v in metrics.items() if k.startswith("loss/")}
    assert metrics["loss/action_l1"].item() < 0.4 * first["loss/action_l1"]  # it learns the actions
    assert ("loss/jepa" in metrics) == (kind == "act-jepa")
    if policy.cfg.goal_image:  # the batch's goals differ: their vectors are watched
        wide = random_batch(policy, b=MIN_GOALS)
        watched = resolve_metrics(policy.eval()(wide)[1])  # eval: unshifted, as embed_goal sees them; the watch is deferred to the trainer's logged steps
        goals = policy.embed_goal(wide["goal"])
        assert watched["collapse/goal/std_mean"] == pytest.approx(goals.std(0).mean().item(), rel=1e-5)
        assert watched["collapse/goal/relative_std"] == pytest.approx((goals.std(0).mean() / goals.pow(2).mean().sqrt()).item(), rel=1e-5)  # what the trainer judges
        policy.train()
    few_goals = dict(batch, goal=batch["goal"][torch.arange(len(batch["goal"])) % 2])
    assert "collapse/goal/std_mean" not in resolve_metrics(policy(few_goals)[1])  # two goals for all: too few to spread
    for name in ("waypoint", "goal_waypoint"):  # and where the proprio will be
        assert (f"loss/{name}" in metrics) == bool(extra.get(f"{name}s"))
        if f"loss/{name}" in metrics:
            assert metrics[f"loss/{name}"].item() < 0.4 * first[f"loss/{name}"]
    policy.eval().reset()
    obs = {"pixels": batch["frames"][:, -1].numpy(), "goal": batch["goal"].numpy(), "proprio": batch["proprio"].numpy()}
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (6, 1 if kind == "bc" else 4, 2) and chunk.abs().max() <= 1
    assert policy.select_action(obs).shape == (6, 2)


def test_image_tokens_at_the_full_grid_are_the_encoders_tokens_in_order():
    policy = tiny_policy("act", image_tokens=4)  # the 32 px encoder's grid is 4: pooling is the identity
    seen = {}
    policy.token_projection.register_forward_pre_hook(lambda module, args: seen.update(tokens=args[0]))  # returns None: input kept
    batch = random_batch(policy, b=2)
    policy._trunk(batch["frames"], batch["goal"], batch["proprio"])
    images = torch.cat([batch["goal"][:, None], batch["frames"]], 1)
    grids = policy.encoder(images.flatten(0, 1)[:, None])[:, 0]  # [2 * (1 + h), 16, D], row-major
    assert torch.allclose(seen["tokens"], grids.reshape(2, -1, grids.shape[-1]), atol=1e-6)


def test_waypoints_need_nonzero_steps_and_a_proprio():
    with pytest.raises(UserError, match="waypoints are steps"):
        PolicyConfig(waypoints=(4, 0))
    with pytest.raises(UserError, match="record none"):
        ChunkPolicy(PolicyConfig(kind="act", action_dim=2, waypoints=(4,)))
    with pytest.raises(UserError, match="record none"):
        ChunkPolicy(PolicyConfig(kind="act", action_dim=2, goal_waypoints=(-1,)))
    with pytest.raises(UserError, match="goal-waypoints are steps"):
        PolicyConfig(goal_waypoints=(0,))
    for bad in ({"goal_waypoints": (-1,)}, {"goal_encoder": True}):
        with pytest.raises(UserError, match="need the goal image: drop --model.no-goal-image"):
            PolicyConfig(goal_image=False, **bad)


@pytest.mark.parametrize("goal_encoder", [True, False])
def test_a_goal_encoder_keeps_the_goal_images_training_off_the_frames_encoder(goal_encoder):
    policy = tiny_policy("act", goal_waypoints=(-1,), goal_encoder=goal_encoder)
    batch = random_batch(policy)
    vectors = policy._trunk(batch["frames"], batch["goal"], batch["proprio"])[1]  # [B, 1 + h, width]
    assert torch.allclose(policy.embed_goal(batch["goal"]), vectors[:, 0], atol=1e-6)  # what the probes read is what the transformer sees
    grads = torch.autograd.grad(vectors[:, 0].sum(), list(policy.encoder.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads) != goal_encoder


@pytest.mark.parametrize("goal_image", [True, False])
def test_the_goal_image_is_read_only_when_asked(goal_image):
    policy = tiny_policy("act", goal_image=goal_image).eval()
    batch = random_batch(policy)
    obs = {"pixels": batch["frames"][:, -1], "goal": batch["goal"], "proprio": batch["proprio"]}
    before = policy.predict_action_chunk(obs)
    policy.reset()
    after = policy.predict_action_chunk(obs | {"goal": 255 - batch["goal"]})
    assert torch.equal(before, after) != goal_image


def test_image_tokens_must_divide_the_encoders_grid():
    with pytest.raises(UserError, match="image-tokens must divide the encoder's token grid"):
        tiny_policy("act", image_tokens=3)  # the 32 px encoder's grid is 4


def test_policy_step_cost_times_every_variant_and_the_window_draws(tmp_path):
    from experiments.benchmarks.policy_step_cost import VARIANTS, draw_seconds, step_seconds

    assert all(min(step_seconds(cfg, steps=1, batch=2)) > 0 for cfg in VARIANTS.values())  # the step and its collapse watch
    draws = draw_seconds(EpisodeDataset(write_dataset(tmp_path / "pt", task="push-t", policy="expert", steps=30, episodes=2)), steps=1, batch=2)
    assert len(draws) == 2 and all(s > 0 for s in draws.values())  # push-t: as recorded and turned


def fit(policy, batch: dict, steps: int = 200) -> dict:
    """Train the policy on one batch by Adam; returns the last step's metrics."""
    opt = torch.optim.Adam(policy.parameters(), 3e-3)
    for _ in range(steps):
        loss, metrics = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return metrics


def test_action_hypotheses_keep_two_demonstrated_moves_apart():
    policy = tiny_policy("act", shift=0, modes=2)
    batch = random_batch(policy, b=8)
    for key in ("frames", "goal", "proprio"):  # one observation ...
        batch[key] = batch[key][:1].expand_as(batch[key]).clone()
    batch["actions"] = torch.tensor([0.8, -0.8]).repeat(4)[:, None, None].expand(8, 4, 2).clone()  # ... two opposite moves
    metrics = fit(policy, batch)
    hypotheses, logits = policy._hypotheses(policy._trunk(batch["frames"][:1], batch["goal"][:1], batch["proprio"][:1])[0])
    assert sorted(hypotheses[0, :, :, 0].mean(1).tolist()) == pytest.approx([-0.8, 0.8], abs=0.1)  # one hypothesis per move
    assert metrics["loss/mode_ce"].item() == pytest.approx(np.log(2), abs=0.1)  # and no way to tell which comes
    obs = {"pixels": batch["frames"][:2, -1], "goal": batch["goal"][:2], "proprio": batch["proprio"][:2]}
    assert policy.eval().predict_action_chunk(obs).abs().min() > 0.6  # executes one of them, not their average


def test_moments_policy_hypotheses_keep_two_demonstrated_moves_apart():
    torch.manual_seed(0)
    cfg = PolicyConfig(kind="moments", colour_moments=2, chunk=4, width=32, modes=2, jepa_weight=0.0, action_dim=2, proprio_dim=3, shift=0,
                       encoder=EncoderConfig(kind="conv", image_size=32))
    policy = MomentPolicy(cfg)
    g = torch.Generator().manual_seed(0)
    batch = {"frame_features": torch.randn(1, 1, 2 * MOMENTS, generator=g).expand(8, 1, -1), "goal_features": torch.randn(1, 2 * MOMENTS, generator=g).expand(8, -1),
             "proprio": torch.zeros(8, 3), "actions": torch.tensor([0.8, -0.8]).repeat(4)[:, None, None].expand(8, 4, 2),
             "action_valid": torch.ones(8, 4, dtype=torch.bool)}  # one observation, two opposite moves
    metrics = fit(policy, batch)
    hypotheses, logits = policy._hypotheses(policy._hidden(batch["frame_features"][:1], batch["goal_features"][:1], batch["proprio"][:1]))
    assert hypotheses.shape == (1, 2, 4, 2) and logits.shape == (1, 2)
    assert sorted(hypotheses[0, :, :, 0].mean(1).tolist()) == pytest.approx([-0.8, 0.8], abs=0.1)  # one hypothesis per move
    assert metrics["loss/mode_ce"].item() == pytest.approx(np.log(2), abs=0.1)  # and no way to tell which comes


def test_jepa_target_is_an_ema_of_the_encoder_and_gets_no_gradient():
    policy = tiny_policy("act-jepa")
    loss, _ = policy(random_batch(policy))
    loss.backward()
    assert all(p.grad is None for p in policy.target.parameters())
    before = [p.clone() for p in policy.target.parameters()]
    with torch.no_grad():
        for p in policy.encoder.parameters():
            p.add_(1.0)
    policy.after_step(0, 10)  # momentum 0.99: the target moves 1% of the way
    moved = [(t - b).abs().max().item() for t, b in zip(policy.target.parameters(), before)]
    assert max(moved) == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("extra", [{}, {"image_tokens": 2}, {"goal_image": False, "image_tokens": 2}])
def test_isolated_jepa_queries_do_not_change_the_actions(extra):
    policy = tiny_policy("act-jepa", isolate_jepa=True, **extra).eval()
    batch = random_batch(policy)
    obs = {"pixels": batch["frames"][:, -1], "goal": batch["goal"], "proprio": batch["proprio"]}
    before = policy.predict_action_chunk(obs)
    with torch.no_grad():
        policy.positions[-len(policy.cfg.future_offsets):] += 5.0  # move only the future-embedding queries
    policy.reset()
    assert torch.equal(policy.predict_action_chunk(obs), before)


def test_execution_runs_chunks_then_requeries_and_ensembling_averages_with_acts_weights(monkeypatch):
    policy = tiny_policy("act").eval()
    calls = []

    def fake_chunk(obs, observe=True):
        calls.append(len(calls))
        return torch.full((1, 4, 2), float(len(calls))) + torch.arange(4.0)[None, :, None] * 0.1  # chunk n: n, n+.1, n+.2, n+.3

    monkeypatch.setattr(policy, "predict_action_chunk", fake_chunk)
    obs = {"pixels": np.zeros((1, 32, 32, 3), np.uint8)}
    actions = [policy.select_action(obs)[0, 0].item() for _ in range(5)]
    assert len(calls) == 3 and actions == pytest.approx([1.0, 1.1, 2.0, 2.1, 3.0])  # execute 2 of each chunk
    policy.cfg.ensemble, calls[:] = 0.5, []
    policy.reset()
    actions = [policy.select_action(obs)[0, 0].item() for _ in range(6)]
    # step 2: chunks 1, 2, 3 give 1.2, 2.1, 3.0 for it, weighted exp(-0.5 * i) with the oldest first
    w = np.exp(-0.5 * np.arange(3))
    assert actions[2] == pytest.approx(float(np.dot(w, [1.2, 2.1, 3.0]) / w.sum()), rel=1e-5)
    # step 5: chunks 1 and 2 have run out (4 actions each); chunks 3..6 give 3.3, 4.2, 5.1, 6.0
    w = np.exp(-0.5 * np.arange(4))
    assert actions[5] == pytest.approx(float(np.dot(w, [3.3, 4.2, 5.1, 6.0]) / w.sum()), rel=1e-5)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("im") / "demos", policy="expert", steps=40, seed=5)


def test_windows_mask_steps_past_the_last_action_and_trim_cuts_at_success(demos):
    dataset = EpisodeDataset(demos)
    episodes = np.arange(dataset.num_episodes)
    full, trimmed = last_actions(dataset, episodes, False), last_actions(dataset, episodes, True)
    assert (full == dataset.episode_starts[1:] - 2).all()
    for e in episodes:  # the trimmed last action is the one that reaches the goal
        assert dataset.is_success[trimmed[e] + 1] and not dataset.is_success[dataset.episode_starts[e]: trimmed[e] + 1].any()
    cfg = PolicyConfig(kind="act-jepa", chunk=6, execute=2, jepa_stride=2, history=3, action_dim=2, proprio_dim=4, waypoints=(3, 9, -1, -3, -1000), goal_waypoints=(9, -1, 1000, -1000))
    batch = demonstration_windows(dataset, episodes, trimmed, cfg)(np.random.default_rng(0), 64)
    assert batch["frames"].shape == (64, 3, 64, 64, 3) and batch["future"].shape == (64, 3, 64, 64, 3)
    valid, fvalid = batch["action_valid"].numpy(), batch["future_valid"].numpy()
    assert not valid.all()  # some windows reach past an episode's last action
    for i, t in enumerate(batch["t"].numpy()):
        e = np.searchsorted(dataset.episode_starts, t, side="right") - 1
        first, last = dataset.episode_starts[e], trimmed[e]
        assert first <= t <= last
        assert (batch["goal"][i].numpy() == dataset.goal_frames[e]).all()
        assert (batch["proprio"][i].numpy() == dataset.proprio[t]).all()
        for j in range(3):  # history t-2, t-1, t, the episode's first frame standing in before it
            assert (batch["frames"][i, j].numpy() == dataset.frames[max(t - 2 + j, first)]).all()
        for j in range(6):  # actions t..t+5, valid up to the last action
            assert valid[i, j] == (t + j <= last)
            if valid[i, j]:
                assert (batch["actions"][i, j].numpy() == dataset.actions[t + j]).all()
        for j, offset in enumerate((2, 4, 6)):  # future frames t+2, t+4, t+6, valid up to the success frame
            assert fvalid[i, j] == (t + offset <= last + 1)
            if fvalid[i, j]:
                assert (batch["future"][i, j].numpy() == dataset.frames[t + offset]).all()
        # waypoints: steps 3 and 9, the success frame (-1), two before it (-3) and one before the start, valid after t only
        for j, at in enumerate((first + 3, first + 9, last + 1, last - 1, last - 998)):
            assert batch["waypoints_valid"][i, j] == (t < at <= last + 1)
            if batch["waypoints_valid"][i, j]:
                assert (batch["waypoints"][i, j].numpy() == dataset.proprio[at]).all()
        # goal waypoints: step 9, the success frame, one past the episode and one before it, valid whatever t
        for j, at in enumerate((first + 9, last + 1, first + 1000, last - 998)):
            assert batch["goal_waypoints_valid"][i, j] == (first <= at <= last + 1)
            if batch["goal_waypoints_valid"][i, j]:
                assert (batch["goal_waypoints"][i, j].numpy() == dataset.proprio[at]).all()
    t = batch["t"].numpy()
    first = dataset.episode_starts[np.searchsorted(dataset.episode_starts, t, side="right") - 1]
    gvalid = batch["goal_waypoints_valid"].numpy()
    assert gvalid[t >= first + 9, 0].any() and gvalid[:, 1].all() and not gvalid[:, 2:].any()  # step 9 stays valid once t passes it
    wvalid = batch["waypoints_valid"].numpy()
    both = wvalid[:, [0, 1, 3]]  # -1 lies after every t, -1000 before every episode: the others are valid for some t only
    assert both.any(0).all() and not both.all(0).any() and wvalid[:, 2].all() and not wvalid[:, 4].any()


def test_symmetric_windows_are_the_recorded_ones_turned_by_a_random_symmetry(tmp_path):
    dataset = EpisodeDataset(write_dataset(tmp_path / "pt", task="push-t", policy="expert", steps=30, episodes=2))
    episodes = np.arange(dataset.num_episodes)
    lasts = last_actions(dataset, episodes, True)
    cfg = PolicyConfig(kind="act-jepa", chunk=4, execute=2, jepa_stride=2, history=2, action_dim=2, proprio_dim=4, waypoints=(5,), goal_waypoints=(-1,))
    recorded = demonstration_windows(dataset, episodes, lasts, cfg)(np.random.default_rng(2), 48)
    turned = demonstration_windows(dataset, episodes, lasts, dataclasses.replace(cfg, square_symmetry=True))(np.random.default_rng(2), 48)
    symmetry, found = PushTEnv.square_symmetry, set()
    for i in range(48):
        one = {name: value[i: i + 1].numpy().copy() for name, value in recorded.items()}
        matches = []
        for index in range(len(ELEMENTS)):
            element, candidate = ELEMENTS[index], dict(one)
            candidate |= {name: turn_images(one[name], *element) for name in ("frames", "goal", "future")}
            candidate |= {name: turn_vectors(one[name], pairs, *element) for name, pairs in
                          (("proprio", symmetry.proprio), ("waypoints", symmetry.proprio), ("goal_waypoints", symmetry.proprio), ("actions", symmetry.actions))}
            if all(np.allclose(candidate[name][0], turned[name][i].numpy()) for name in candidate):
                matches.append(index)
        assert matches, f"window {i} is no turned copy of the recorded one"
        found.update(matches)
    assert len(found) >= 6  # the elements are drawn at random
    assert not np.allclose(turned["actions"].numpy(), recorded["actions"].numpy())
    run = tmp_path / "run"  # the proprio is normalised by the moments training sees: every frame in every turn
    assert main(["imitate", "--data", str(tmp_path / "pt"), "--out", str(run), "--policy", "act", "--model.square-symmetry", "--no-successful-only", "--train.steps", "1",
                 "--model.colour-moments", "4", *TINY]) == 0
    policy, _ = load_policy(run)
    assert policy.proprio_mean.abs().max() < 1e-6
    distances = torch.cdist(torch.tensor([[235, 230, 209], [115, 140, 179], [76, 76, 76]]) / 255, policy.moments.palette)  # floor, block, walls
    assert distances.min(1).values.max() < 0.1  # each in the saved palette
    walls = int(distances[2].argmin())
    assert policy.moments.feature_std[walls * MOMENTS + 1] > 0.05  # fitted on shifted frames, as training sees them: the walls' centroid moves
    assert policy.proprio_std[0] == pytest.approx(policy.proprio_std[1]) and policy.proprio_std[2] == pytest.approx(policy.proprio_std[3])
    for task in ("push-t-fixed", "metaworld:reach-v3"):  # a turned episode of push-t-fixed aims at another goal
        with pytest.raises(UserError, match="does not declare"):
            square_symmetry(task)


def test_moments_policy_reads_cached_features_of_the_turned_frames_and_runs(tmp_path):
    data = write_dataset(tmp_path / "pt", task="push-t", policy="expert", steps=30, episodes=2)
    run = tmp_path / "run"
    assert main(["imitate", "--data", str(data), "--out", str(run), "--policy", "moments", "--model.colour-moments", "4", "--model.square-symmetry",
                 "--model.history", "2", "--model.jepa-weight", "1", "--no-successful-only", "--train.steps", "200", "--train.warmup", "10", "--train.batch-size", "16", "--train.log-every", "50"]) == 0
    policy, _ = load_policy(run)
    assert isinstance(policy, MomentPolicy)
    dataset = EpisodeDataset(data)
    episodes = np.arange(dataset.num_episodes)
    lasts = last_actions(dataset, episodes, True)
    features = moment_features(dataset, episodes, lasts, policy.moments, symmetric=True)
    with_images = demonstration_windows(dataset, episodes, lasts, policy.cfg)(np.random.default_rng(4), 24)
    with_features = demonstration_windows(dataset, episodes, lasts, policy.cfg, features)(np.random.default_rng(4), 24)  # the same windows, the same turns
    assert not {"frames", "goal"} & set(with_features)
    frames = policy.moments.features(with_images["frames"].flatten(0, 1)).reshape(24, 2, -1)
    assert torch.allclose(with_features["frame_features"], frames, atol=1e-5)
    assert torch.allclose(with_features["goal_features"], policy.moments.features(with_images["goal"]), atol=1e-5)
    future = policy.moments.features(with_images["future"].flatten(0, 1)).reshape(24, len(policy.cfg.future_offsets), -1)
    assert policy.cfg.future_offsets and torch.allclose(with_features["future_features"], future, atol=1e-5)  # the frames it predicts (jepa_weight)
    assert torch.equal(with_features["actions"], with_images["actions"]) and not torch.equal(with_images["actions"], demonstration_windows(
        dataset, episodes, lasts, dataclasses.replace(policy.cfg, square_symmetry=False))(np.random.default_rng(4), 24)["actions"])  # turned
    _, metrics = policy.train()(with_features)
    assert metrics["loss/jepa"] > 0 and not with_features["future_features"].requires_grad
    assert metrics["loss/action_l1"] < 0.8 * masked_l1(torch.zeros_like(with_features["actions"]), with_features["actions"], with_features["action_valid"])  # 200 steps learned something
    assert main(["policy-eval", "--run", str(run), "--episodes", "2", "--seeds", "0", "--steps", "5", "--no-baselines", "--no-videos"]) == 0


def test_moments_policy_reads_the_goal_moments_that_follow_where_demonstrations_end():
    cfg = PolicyConfig(kind="moments", colour_moments=2, jepa_weight=0.0, action_dim=2, proprio_dim=3, shift=0, encoder=EncoderConfig(kind="conv", image_size=32))
    g = torch.Generator().manual_seed(0)
    reached = torch.randn(200, 2 * MOMENTS, generator=g)
    goals = torch.randn(200, 2 * MOMENTS, generator=g)  # another pusher in each goal image: nothing to do with where episodes end
    goals[:, :MOMENTS] = 3 * reached[:, :MOMENTS] + 0.5 * torch.randn(200, MOMENTS, generator=g) + 1  # the block: where it ends, seen a little differently
    policy = MomentPolicy(cfg)
    assert policy.choose_goal_moments(goals[None], reached[None]) == MOMENTS  # one turn
    assert policy.goal_read.tolist() == [1.0] * MOMENTS + [0.0] * MOMENTS
    features = lambda goal: {"frame_features": reached[:4, None], "goal_features": goal, "proprio": torch.zeros(4, 3)}  # noqa: E731
    other_pusher = goals[:4].clone()
    other_pusher[:, MOMENTS:] = 0
    assert torch.equal(policy._hypotheses(policy._hidden(**features(goals[:4])))[0], policy._hypotheses(policy._hidden(**features(other_pusher)))[0])  # the unread moments change nothing
    assert not torch.equal(policy._hypotheses(policy._hidden(**features(goals[:4])))[0], policy._hypotheses(policy._hidden(**features(goals[4:8])))[0])
    every = MomentPolicy(dataclasses.replace(cfg, goal_min_correlation=-1))
    assert every.choose_goal_moments(goals[None], reached[None]) == 2 * MOMENTS
    shifted = torch.stack([reached, reached + 5])  # a second turn moves both the goal's and the reached frame's pusher alike
    assert policy.choose_goal_moments(torch.stack([goals, goals + 5]), shifted) == MOMENTS  # not agreement


def test_moments_policy_starts_from_its_own_defaults_and_given_flags_win():
    from agents.moment_policy import RECIPE_MODEL, RECIPE_TRAIN
    from experiments.cli import parse
    from experiments.imitate_commands import IMITATE_TRAIN

    given = ["--train.steps", "3000", "--model.history", "1", "--train.seed", "3"]  # imitate's own defaults, asked for
    moments = parse(["imitate", "--data", "d", "--out", "o", "--policy", "moments", *given])
    assert (moments.train.steps, moments.model.history, moments.train.seed) == (3000, 1, 3)
    assert all(getattr(moments.train, k) == v for k, v in RECIPE_TRAIN.items() if k != "steps")
    assert all(getattr(moments.model, k) == v for k, v in RECIPE_MODEL.items() if k != "history")
    act = parse(["imitate", "--data", "d", "--out", "o", "--policy=act"])
    assert act.train == IMITATE_TRAIN and act.model == PolicyConfig()


@pytest.fixture(scope="module")
def trained_policy(demos, tmp_path_factory):
    run = tmp_path_factory.mktemp("im") / "run"
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--train.steps", "4", *TINY]) == 0
    return run


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


def test_held_out_episodes_are_the_last_ones_and_only_successful_ones_are_scored():
    from types import SimpleNamespace

    success = np.array([[0, 1], [0, 1], [0, 0], [0, 1], [0, 0], [0, 1]], dtype=bool)  # episodes 2 and 4 fail
    dataset = SimpleNamespace(num_episodes=6, episode_starts=np.arange(0, 14, 2), is_success=success.ravel(), path="D")
    dataset.episode = lambda e: slice(2 * e, 2 * e + 2)
    learned, held_out = demonstration_episodes(dataset, held_out=3)
    assert list(learned) == [0, 1] and list(held_out) == [3, 5]
    assert [list(part) for part in demonstration_episodes(dataset, successful_only=False, held_out=3)] == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(UserError, match="none of the last 1 demonstrations"):
        demonstration_episodes(SimpleNamespace(**{**vars(dataset), "num_episodes": 5, "episode_starts": np.arange(0, 12, 2)}), held_out=1)


def test_held_out_demonstrations_are_left_out_of_training_and_score_the_policy(demos, tmp_path, capsys, monkeypatch):
    dataset = EpisodeDataset(demos)
    learned, held_out = demonstration_episodes(dataset, held_out=1)
    assert list(learned) == [0, 1, 2] and list(held_out) == [3]
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["imitate", "--data", str(demos), "--out", str(run), "--policy", "act", "--train.steps", "4", "--train.val-every", "2",
                 "--val-episodes", "1", "--model.waypoints", "3", *TINY]) == 0
    metrics = json.loads((run / "policy" / "metrics.json").read_text())
    assert {"val/total", "val/action_l1", "val/waypoint"} <= set(metrics) and "held-out" in capsys.readouterr().out
    config = json.loads((run / "policy" / "config.json").read_text())
    assert config["demonstrations"] == 3 and config["val_episodes"] == 1
    from experiments.benchmarks import heldout_losses

    policy, config = load_policy(run)  # the last score is the final policy's on the held-out episode's fixed windows
    assert window_scorer(dataset, held_out, policy.cfg, config["trim"], config["train"]["seed"])(policy)["waypoint"] == pytest.approx(metrics["val/waypoint"], rel=1e-5)
    other = write_dataset(tmp_path / "other", policy="expert", steps=40, seed=6)
    monkeypatch.setattr("sys.argv", ["heldout_losses.py", "--data", str(other), "--run", str(run)])  # any run on another collection
    heldout_losses.main()
    assert set(json.loads(capsys.readouterr().out)["held_out"]) == {"total", "action_l1", "waypoint"}
    monkeypatch.setattr("sys.argv", ["heldout_losses.py", "--run", str(run), "--seed", "3"])  # on its own demonstrations, as --candidates ranks
    heldout_losses.main()
    own = window_scorer(dataset, learned, policy.cfg, config["trim"], 3)(policy)
    assert json.loads(capsys.readouterr().out)["own"]["total"] == pytest.approx(own["total"], abs=1e-4)
    monkeypatch.setattr("sys.argv", ["heldout_losses.py", "--data", str(demos), "--run", str(run)])
    with pytest.raises(SystemExit, match="score it on another collection"):
        heldout_losses.main()


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
    learned, held_out = demonstration_episodes(dataset, held_out=val_episodes)
    for seed, folder in folders.items():  # every candidate scored on the same windows: those of the first seed
        policy, config = load_policy(folder)
        scored = window_scorer(dataset, held_out if val_episodes else learned, policy.cfg, config["trim"], 5)(policy)["total"]
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
    from experiments.benchmarks.candidate_choice import choose  # reads the choice off runs trained one seed at a time

    for folder in folders.values():
        assert main(["policy-eval", "--run", str(folder), "--episodes", "2", "--seeds", "0", "--steps", "3", "--no-baselines", "--no-videos"]) == 0
    if val_episodes:
        with pytest.raises(UserError, match="held demonstrations out"):
            choose(list(folders.values()), 3)
    else:  # it keeps what the command kept, on the same scores
        result = choose(list(folders.values()), 3)
        assert result["command"]["kept_seed"] == best and result["window_seed"] == 5
        assert {r["seed"]: r["own_total"] for r in result["runs"]} == pytest.approx(totals, rel=1e-4)


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


def test_candidates_refuse_a_run_folder_whose_policy_was_trained_alone(demos, trained_policy, capsys):
    before = (trained_policy / "policy" / "checkpoint.safetensors").read_bytes()
    assert main(["imitate", "--data", str(demos), "--out", str(trained_policy), "--val-episodes", "1", "--candidates", "2", *TINY]) == 2
    assert "trained without --candidates" in capsys.readouterr().err
    assert (trained_policy / "policy" / "checkpoint.safetensors").read_bytes() == before


def test_replace_folder_never_leaves_the_target_missing(tmp_path):
    from infra.files import replace_folder

    source, target, aside = tmp_path / "source", tmp_path / "target", tmp_path / ".target.old"
    aside.mkdir()  # a swap cut short between its two renames: the old folder set aside, no target
    (aside / "a.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_folder(source, target)  # the copy fails: the old folder is back in place
    assert (target / "a.txt").read_text() == "old"
    source.mkdir()
    (source / "a.txt").write_text("new")
    replace_folder(source, target)
    assert (target / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["source", "target"]


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
    (["imitate", "--data", "{data}", "--out", "{empty}", "--policy", "diffusion"], "policy must be one of"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--val-episodes", "4"], "--val-episodes must be from 0 to 3"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--encoder", "{empty}"], "jepa pretrain"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--candidates", "0"], "--candidates must be at least 1"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--model.square-symmetry"], "does not declare the square's symmetries"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--model.colour-moments", "1"], "colour-moments is a palette's size"),
    (["imitate", "--data", "{data}", "--out", "{empty}", "--model.goal-min-correlation", "2"], "goal-min-correlation is a correlation's threshold"),
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


@pytest.mark.parametrize("flags, message", [(["--waypoint-weight", "-1"], "waypoint-weight is not negative"), (["--candidates", "0"], "--candidates must be at least 1"),
                                           (["--policies", "act,diffusion"], "policy must be one of"), (["--square-symmetry"], "does not declare the square's symmetries")])
def test_imitation_table_checks_its_options_before_collecting(tmp_path, monkeypatch, flags, message):
    from experiments.benchmarks import imitation

    monkeypatch.setattr("sys.argv", ["imitation.py", "--task", "two-room", "--out", str(tmp_path / "table"), *flags])
    with pytest.raises(SystemExit, match=message):
        imitation.main()
    assert not (tmp_path / "table").exists()  # no demonstrations were collected for a table that could not be trained


def test_sb3_expert_trains_saves_without_pickle_and_records_demonstrations(tmp_path, capsys):
    run = tmp_path / "sac"
    assert main(["train-expert", "--task", "reacher", "--out", str(run), "--steps", "150", "--net", "16", "16",
                 "--eval-episodes", "2", "--eval-seeds", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"success_rate", "ci95", "episodes", "seeds"} <= set(result)
    assert sorted(p.name for p in (run / "expert").iterdir() if p.is_file()) == ["eval.json", "expert.json", "policy.safetensors"]
    assert main(["collect", "--task", "reacher", "--policy", f"sb3:{run}", "--episodes", "2", "--steps", "5", "--out", str(tmp_path / "demos")]) == 0
    dataset = EpisodeDataset(tmp_path / "demos")
    assert dataset.attrs["policy"] == f"sb3:{run}" and np.abs(dataset.actions).max() <= 1
    weights = (run / "expert" / "policy.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train-expert", "--task", "reacher", "--out", str(run), "--steps", "200", "--net", "16", "16"]) == 2
    assert "holds an expert trained otherwise (differs in steps)" in capsys.readouterr().err
    assert (run / "expert" / "policy.safetensors").read_bytes() == weights


def test_metaworld_task_collects_and_its_scripted_expert_succeeds(tmp_path):
    from envs.metaworld_tasks import MetaWorldExpert

    env = make_task("metaworld:reach-v3", pixels=False)
    successes = []
    for seed in range(2):
        env.reset(seed=seed)
        policy = MetaWorldExpert(env)
        reached = False
        for _ in range(env.default_max_steps):
            reached |= env.step(policy())[4]["is_success"]
        successes.append(reached)
    assert all(successes)
    with pytest.raises(UserError, match="no start or goal"):
        env.reset(options={"state": np.zeros(3)})
    env.close()
    assert main(["collect", "--task", "metaworld:reach-v3", "--policy", "expert", "--episodes", "1", "--steps", "3", "--out", str(tmp_path / "mw")]) == 0
    dataset = EpisodeDataset(tmp_path / "mw")
    assert dataset.frames.shape[1:] == (64, 64, 3) and dataset.frames[0].std() > 0
    assert dataset.render_revision == env.render_revision == 2  # the object drawn yellow, in the table view


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


def test_metaworld_workspace_view_shows_the_goal_marker_and_survives_a_freed_env():
    """The goal marker (sphere, pole and ground disc) spans many pixels at 64x64, and an env
    freed before another one steps does not leave the next one rendering black frames."""
    import gc

    from envs.metaworld_tasks import MetaWorldExpert

    first = make_task("metaworld:push-v3")
    first.reset(seed=0)
    first.step(MetaWorldExpert(first)())
    env = make_task("metaworld:reach-v3")
    env.reset(seed=3)
    del first
    gc.collect()
    with_marker = env.step(np.zeros(4))[0]["pixels"]
    assert with_marker.std() > 0
    goal = env.goal_site
    env.model.site_rgba[goal, 3] = 0.0
    without_marker = env.render()
    changed = (np.abs(with_marker.astype(int) - without_marker).sum(-1) > 60).sum()
    assert changed >= 15, f"the goal marker covers {changed} pixels"
    goal_z = env.env.data.site_xpos[goal][2]
    pole, disc = env._goal_markers()  # reach goals float: a pole from the table up to the goal, a disc at its foot
    assert pole["pos"][2] - pole["size"][1] == pytest.approx(0.0) and pole["pos"][2] + pole["size"][1] == pytest.approx(goal_z)
    assert disc["pos"][2] - disc["size"][1] == pytest.approx(0.0) and disc["size"][1] < 0.01
    env.close()


def test_policy_diagnosis_starts_from_the_demonstrations_own_starts(demos, trained_policy, monkeypatch, capsys):
    """The diagnosis replays the starts of the demonstrations the policy learned from (the collect
    seeds are pinned, so datasets collected earlier replay too) and policy-eval's fresh ones."""
    from envs.collect import episode_seeds
    from experiments.benchmarks import policy_diagnosis
    from experiments.protocol import eval_reset_seeds

    assert [episode_seeds(5, e)[0] for e in (0, 1)] == [803261128, 2634622467]
    calls = []

    def recording(envs, resets, budget, act, on_step=None):
        calls.append(list(resets))
        return run_lockstep(envs, resets, 3, act, on_step)

    monkeypatch.setattr(policy_diagnosis, "run_lockstep", recording)
    report = policy_diagnosis.diagnose(trained_policy, 2)
    learned = demonstration_episodes(EpisodeDataset(demos))[0][:2]
    assert calls == [[episode_seeds(5, int(e))[0] for e in learned], eval_reset_seeds(0, 2)]
    assert np.isfinite([report["frame_vector_std"], report["goal_vector_std"]]).all() and report["expert_first_action_std"] > 0
    assert "first-action std" in capsys.readouterr().out


def test_hand_and_object_tell_following_from_ignoring():
    from experiments.benchmarks.policy_diagnosis import hand_and_object

    rng = np.random.default_rng(0)
    states = np.zeros((8, 70, 39))
    states[:, :, 4:6] = rng.uniform(-0.1, 0.1, (8, 1, 2))  # objects at rest at their starts
    states[:, :, 2] = np.linspace(0.2, 0.0, 70)[None]  # the hand descends; lowest at step 59 of the first 60
    states[:, :, :2] = states[:, :, 4:6] + 0.3
    states[:, 59, :2] = states[:, 0, 4:6] + 0.01  # where it is lowest: 1 cm off the object in x and y
    report = hand_and_object(states)
    assert report["object_slope"] == pytest.approx([1.0, 1.0]) and report["closest_approach"] == pytest.approx(0.01 * np.sqrt(2))
    assert report["object_moved"] == 0 and np.isnan(report["moved_object_to_goal"])
    states[:2, 65:, 4:6] = 0.5  # two objects carried off, to 0.5 - 0.2 = 0.3 in x and y from a goal at (0.2, 0.2)
    states[:, :, 36:38] = 0.2
    moved = hand_and_object(states)
    assert moved["object_moved"] == 0.25 and moved["moved_object_to_goal"] == pytest.approx(0.3 * np.sqrt(2))
    states[:, 59, :2] = 0.05  # one place whatever the object's
    assert hand_and_object(states)["object_slope"] == pytest.approx([0.0, 0.0], abs=1e-9)


def test_metaworld_object_is_drawn_yellow_and_larger_in_the_table_view():
    """The manipulated object stands out in yellow at 64x64 (the yellow pixels are the object's:
    hidden, none are left), pick-place's table view draws it larger than the workspace view, and tasks
    without an "obj" body are left as they are."""
    import mujoco

    from envs.metaworld_tasks import OBJECT_RGBA, WORKSPACE_VIEW

    def yellow(frame):
        return int((np.abs(frame.astype(int) - np.multiply(OBJECT_RGBA[:3], 255)).max(-1) < 60).sum())

    env = make_task("metaworld:pick-place-v3")
    shown = yellow(env.reset(seed=7)[0]["pixels"])
    wide = type("WidePickPlace", (type(env),), {"view": WORKSPACE_VIEW})()
    assert shown >= 2 * yellow(wide.reset(seed=7)[0]["pixels"]) >= 8, "TABLE_VIEW draws the puck larger than WORKSPACE_VIEW"
    wide.close()
    env.model.geom_rgba[env.model.geom_bodyid == mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "obj"), 3] = 0.0
    assert yellow(env.render()) == 0
    env.close()
    door = make_task("metaworld:door-open-v3")
    assert yellow(door.reset(seed=7)[0]["pixels"]) == 0
    door.close()


def test_metaworld_goal_image_shows_this_episodes_goal():
    """The first frame (the goal image) draws the goal marker where this episode's goal is, not
    where the previous episode's was (Meta-World moves the goal site after its forward pass)."""
    import mujoco

    env = make_task("metaworld:reach-v3")
    env.reset(seed=0)
    goal_image = env.reset(seed=1)[0]["pixels"]
    assert env.env.data.site_xpos[env.goal_site] == pytest.approx(env.goal_state)
    mujoco.mj_forward(env.model, env.env.data)
    assert (env.render() == goal_image).all()
    env.close()


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
