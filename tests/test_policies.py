"""The policies (agents/policy.py, chunk_policy.py, moment_policy.py): the contract every kind
keeps, what each network reads, action hypotheses, the EMA target, and chunked and ensembled execution."""

import dataclasses

import numpy as np
import pytest
import torch

from agents.chunk_policy import KINDS, MIN_GOALS, ChunkPolicy, ChunkPolicyConfig
from agents.moment_policy import MomentPolicy, MomentPolicyConfig
from worldmodel.goal_features import widest_gap_cut
from infra.errors import UserError
from worldmodel.encoders import MOMENTS, EncoderConfig
from worldmodel.trainer import resolve_metrics


def tiny_policy(kind: str, **kw) -> ChunkPolicy:
    torch.manual_seed(0)
    cfg = ChunkPolicyConfig(kind=kind, chunk=4, execute=2, width=16, depth=1, heads=2, action_dim=2, proprio_dim=3, square_symmetry=False,
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


@pytest.mark.parametrize("kind, extra", [(kind, {}) for kind in KINDS] + [("act-jepa", {"image_tokens": 2}), ("act", {"waypoints": (3, -1), "goal_image": False}),
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
        ChunkPolicyConfig(waypoints=(4, 0))
    with pytest.raises(UserError, match="record none"):
        ChunkPolicy(ChunkPolicyConfig(kind="act", square_symmetry=False, action_dim=2, waypoints=(4,)))
    with pytest.raises(UserError, match="record none"):
        ChunkPolicy(ChunkPolicyConfig(kind="act", square_symmetry=False, action_dim=2, goal_waypoints=(-1,)))
    with pytest.raises(UserError, match="goal-waypoints are steps"):
        ChunkPolicyConfig(goal_waypoints=(0,))
    for bad in ({"goal_waypoints": (-1,)}, {"goal_encoder": True}):
        with pytest.raises(UserError, match="need the goal image: drop --model.no-goal-image"):
            ChunkPolicyConfig(goal_image=False, **bad)


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
    cfg = MomentPolicyConfig(square_symmetry=False, colour_moments=2, chunk=4, width=32, modes=2, history=1, jepa_weight=0.0, action_dim=2, proprio_dim=3, image_size=32)
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


def test_moments_policy_reads_the_goal_moments_that_follow_where_demonstrations_end():
    cfg = MomentPolicyConfig(square_symmetry=False, colour_moments=2, modes=1, history=1, width=256, jepa_weight=0.0, goal_min_correlation=0.9, action_dim=2, proprio_dim=3, image_size=32)
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



def test_the_goal_moments_chosen_from_the_data_are_the_same_on_sets_that_differ_by_noise():
    # 20 moments: 4 follow where the demonstrations end very closely (correlation 0.95), 4 closely (0.9,
    # where a fixed cut at 0.9 reads some on one set and drops them on another), 4 loosely (0.8), 8 not at all
    assert MomentPolicyConfig().goal_min_correlation is None  # the default: the cut is chosen from the data
    cfg = MomentPolicyConfig(square_symmetry=False, colour_moments=2, modes=1, history=1, jepa_weight=0.0, action_dim=2, proprio_dim=3, image_size=32)
    correlation = torch.tensor([0.95] * 4 + [0.9] * 4 + [0.8] * 4 + [0.0] * 6 + [-0.9] * 2)  # two strongly opposed: no gap below 0 counts
    strength = correlation / (1 - correlation**2).sqrt()  # goal = strength * reached + unit noise has this correlation
    chosen = []
    for seed in (0, 1, 2):  # three sets of 400 demonstrations
        g = torch.Generator().manual_seed(seed)
        reached = torch.randn(400, 2 * MOMENTS, generator=g)
        goals = strength * reached + torch.randn(400, 2 * MOMENTS, generator=g)
        policy = MomentPolicy(cfg)
        assert policy.choose_goal_moments(goals[None], reached[None]) == 12
        chosen.append(policy.goal_read.tolist())
    assert chosen[0] == chosen[1] == chosen[2] == [1.0] * 12 + [0.0] * 8
    assert widest_gap_cut(torch.tensor([0.1, 0.0, 0.9, 0.95, 0.2])) == pytest.approx(0.55)
