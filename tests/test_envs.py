"""The MuJoCo tasks: gymnasium contract, the task interface, determinism, goal images, experts, bad input."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import TASKS, TaskEnv, UserError, make_task, task_spec
from envs.collect import CollectSpec, collect
from envs.symmetry import ELEMENTS, matrix, turn_images, turn_vectors

NAMES = list(TASKS)


@pytest.mark.parametrize("name", NAMES)
def test_check_env_passes(name):
    env = make_task(name)
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_gymnasium(name):
    env = gym.make(TASKS[name].gym_id, image_size=32)
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3) and obs["pixels"].dtype == np.uint8
    assert "is_success" in info
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_frames(name):
    runs = []
    for _ in range(2):
        env = make_task(name)
        obs, _ = env.reset(seed=7)
        frames = [obs["pixels"]]
        rng = np.random.default_rng(0)
        for _ in range(5):
            frames.append(env.step(rng.uniform(-1, 1, env.action_space.shape))[0]["pixels"])
        runs.append(np.stack(frames))
        env.close()
    assert np.array_equal(runs[0], runs[1])
    assert runs[0].std() > 0, "frames must show something"


@pytest.mark.parametrize("name", NAMES)
def test_goal_image_matches_goal_state(name):
    env = make_task(name)
    env.reset(seed=1)
    goal = env.random_state(np.random.default_rng(5))
    obs, _ = env.reset(seed=2, options={"goal": goal})
    goal_image = env.render_goal()
    assert not np.array_equal(goal_image, obs["pixels"]), "goal and start should differ"
    env.set_state(goal)
    assert np.array_equal(env.render(), goal_image)
    assert env.is_success(), "a state is a success against itself"
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_224_pixels_work(name):
    env = make_task(name, image_size=224)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (224, 224, 3)
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_scripted_expert_succeeds_in_95_percent_of_50_episodes(name):
    spec = CollectSpec(task=name, policy="expert", seed=2026, pixels=False)
    successes = [episode.succeeded for episode in collect(spec, 50)]
    assert np.mean(successes) >= 0.95, f"{name} expert succeeded in {np.mean(successes):.0%}"


@pytest.mark.parametrize("name", NAMES)
def test_random_policy_rarely_succeeds(name):
    spec = CollectSpec(task=name, policy="random", seed=2026, pixels=False)
    assert np.mean([episode.succeeded for episode in collect(spec, 20)]) < 0.5


def test_bad_sizes_and_states_give_user_errors():
    with pytest.raises(UserError, match="image size"):
        make_task("two-room", image_size=0)
    with pytest.raises(UserError, match="frame skip"):
        make_task("reacher", frame_skip=0)
    with pytest.raises(UserError, match="unknown task"):
        make_task("tworoom")
    env = make_task("push-t")
    with pytest.raises(UserError, match="state must have shape"):
        env.set_state(np.zeros(3))
    with pytest.raises(UserError, match="goal must be a full state"):
        env.reset(options={"goal": np.zeros(2)})
    env.close()


@pytest.mark.parametrize("name", [*NAMES, "metaworld:reach-v3"])
def test_every_task_implements_the_task_interface_and_declares_what_it_can_do(name):
    """Our MuJoCo tasks can be set to any state (planning, probes, SB3 experts); Meta-World's cannot."""
    env_class = task_spec(name).env_class
    assert issubclass(env_class, TaskEnv) and env_class.default_max_steps > 0
    assert env_class.settable_state == (name in TASKS)
    env = make_task(name, pixels=False)
    obs, info = env.reset(seed=0)
    assert isinstance(env, TaskEnv) and env.render_goal().shape == obs["pixels"].shape and "is_success" in info
    if env.settable_state:
        state = env.get_state()
        env.reset(options={"state": state, "goal": state})
        np.testing.assert_allclose(env.get_state(), state)
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_probe_variables_name_every_column_and_include_positions(name):
    env = make_task(name, pixels=False)
    states = np.stack([env.random_state(np.random.default_rng(i)) for i in range(5)])
    values = env.probe_variables(states)
    assert values.shape == (5, len(env.probe_names))
    assert set(env.position_names) <= set(env.probe_names)


def test_wander_holds_actions_and_mixed_uses_both_sources():
    """wander repeats each random action for a while; mixed gives some wander and some expert episodes."""
    spec = CollectSpec(task="two-room", policy="wander", steps=30, seed=4, pixels=False)
    actions = list(collect(spec, 1))[0].actions[:-1]
    changes = int((np.abs(np.diff(actions, axis=0)).sum(1) > 0).sum())
    assert 2 <= changes < 29, changes  # held for several steps, yet not constant
    mixed = CollectSpec(task="two-room", policy="mixed", steps=30, seed=4, pixels=False)
    held = [int((np.abs(np.diff(e.actions[:-1], axis=0)).sum(1) == 0).sum()) for e in collect(mixed, 8)]
    assert min(held) == 0 and max(held) > 5, held  # noisy-expert episodes never repeat an action exactly


@pytest.mark.parametrize("element", ELEMENTS[1:])
def test_push_t_looks_and_moves_the_same_turned_by_the_squares_symmetries(element):
    env = make_task("push-t")
    symmetry, m = env.square_symmetry, matrix(*element)
    env.reset(seed=4)
    state = env.get_state()
    state[3:5] = state[0:2] - [0.1, 0.02]  # the pusher just left of the block, clear of it

    def turned(state):  # qpos (block x, y, angle, pusher x, y), qvel alike; the T's own axis is its stem's
        axis = m @ [-np.sin(state[2]), np.cos(state[2])]
        out = state.copy()
        out[[0, 1]], out[[3, 4]], out[[5, 6]], out[[8, 9]] = m @ state[[0, 1]], m @ state[[3, 4]], m @ state[[5, 6]], m @ state[[8, 9]]
        out[2], out[7] = np.arctan2(-axis[0], axis[1]), np.linalg.det(m) * state[7]
        return out

    image, image_turned = env.render_state(state), env.render_state(turned(state))
    assert np.abs(turn_images(image, *element).astype(int) - image_turned).mean() < 0.5  # pixel for pixel, up to rasterisation
    assert np.abs(image.astype(int) - image_turned).mean() > 2  # while the frame itself did change
    env.set_state(state)
    twin = make_task("push-t")
    twin.reset(seed=4)
    twin.set_state(turned(state))
    action = np.array([1.0, 0.1], np.float32)
    for _ in range(8):  # push the block: contact dynamics turn with the world
        env.step(action)
        twin.step(turn_vectors(action, symmetry.actions, *element))
    assert np.linalg.norm(env.get_state()[:2] - state[:2]) > 0.01  # it was pushed
    difference = twin.get_state() - turned(env.get_state())
    difference[2] = (difference[2] + np.pi) % (2 * np.pi) - np.pi  # the hinge angle is not wrapped
    assert np.abs(difference).max() < 1e-3  # contacts mirror to a fraction of a mm
    proprio, proprio_turned = env.proprio(env.data), twin.proprio(twin.data)
    np.testing.assert_allclose(turn_vectors(proprio, symmetry.proprio, *element), proprio_turned, atol=1e-3)
    env.close(), twin.close()
