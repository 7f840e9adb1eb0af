"""Demonstrations as a policy learns from them (agents/demonstrations.py): the episodes, the
windows and their masks, the square's symmetry turns, the cached features, the held-out split."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY, write_dataset

from agents.demonstrations import Demonstrations, WindowSpec, demonstration_episodes, draw_windows, last_actions, square_symmetry
from agents.moment_policy import MomentPolicy
from agents.policy import masked_l1
from envs.dataset import EpisodeDataset
from envs.push_t import PushTEnv
from envs.symmetry import ELEMENTS, turn_images, turn_vectors
from experiments.cli import main
from experiments.runs import load_policy
from infra.errors import UserError
from worldmodel.encoders import MOMENTS


def test_windows_mask_steps_past_the_last_action_and_trim_cuts_at_success(demos):
    dataset = EpisodeDataset(demos)
    episodes = np.arange(dataset.num_episodes)
    full, trimmed = last_actions(dataset, episodes, False), last_actions(dataset, episodes, True)
    assert (full == dataset.episode_starts[1:] - 2).all()
    for e in episodes:  # the trimmed last action is the one that reaches the goal
        assert dataset.is_success[trimmed[e] + 1] and not dataset.is_success[dataset.episode_starts[e]: trimmed[e] + 1].any()
    spec = WindowSpec(history=3, horizon=6, future_offsets=(2, 4, 6), waypoints=(3, 9, -1, -3, -1000), goal_waypoints=(9, -1, 1000, -1000))
    batch = draw_windows(dataset, episodes, trimmed, spec)(np.random.default_rng(0), 64)
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
    spec = WindowSpec(history=2, horizon=4, future_offsets=(2, 4), waypoints=(5,), goal_waypoints=(-1,))
    recorded = draw_windows(dataset, episodes, lasts, spec)(np.random.default_rng(2), 48)
    turned = draw_windows(dataset, episodes, lasts, dataclasses.replace(spec, symmetric=True))(np.random.default_rng(2), 48)
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
                 "--model.history", "2", "--model.jepa-weight", "1", "--no-successful-only", "--candidates", "1", "--train.steps", "200", "--train.warmup", "10", "--train.batch-size", "16", "--train.log-every", "50"]) == 0
    policy, _ = load_policy(run)
    assert isinstance(policy, MomentPolicy)
    demos = Demonstrations(EpisodeDataset(data), successful_only=False)
    spec = policy.window_spec()  # images: the windows a policy that encodes them would draw
    features = demos.cache_features(policy.moments.features, symmetric=True)
    with_images = demos.windows(spec)(np.random.default_rng(4), 24)
    with_features = demos.windows(dataclasses.replace(spec, features=features))(np.random.default_rng(4), 24)  # the same windows, the same turns
    assert not {"frames", "goal"} & set(with_features)
    frames = policy.moments.features(with_images["frames"].flatten(0, 1)).reshape(24, 2, -1)
    assert torch.allclose(with_features["frame_features"], frames, atol=1e-5)
    assert torch.allclose(with_features["goal_features"], policy.moments.features(with_images["goal"]), atol=1e-5)
    future = policy.moments.features(with_images["future"].flatten(0, 1)).reshape(24, len(policy.cfg.future_offsets), -1)
    assert policy.cfg.future_offsets and torch.allclose(with_features["future_features"], future, atol=1e-5)  # the frames it predicts (jepa_weight)
    assert torch.equal(with_features["actions"], with_images["actions"]) and not torch.equal(with_images["actions"], demos.windows(
        dataclasses.replace(spec, symmetric=False))(np.random.default_rng(4), 24)["actions"])  # turned
    _, metrics = policy.train()(with_features)
    assert metrics["loss/jepa"] > 0 and not with_features["future_features"].requires_grad
    assert metrics["loss/action_l1"] < 0.8 * masked_l1(torch.zeros_like(with_features["actions"]), with_features["actions"], with_features["action_valid"])  # 200 steps learned something
    assert main(["policy-eval", "--run", str(run), "--episodes", "2", "--seeds", "0", "--steps", "5", "--no-baselines", "--no-videos"]) == 0


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

