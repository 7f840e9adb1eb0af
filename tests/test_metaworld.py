"""Meta-World v3 tasks behind our task interface (envs/metaworld_tasks.py): collection with the
package's scripted policies, the workspace camera, the drawing of the object and the goal image."""

import numpy as np
import pytest

from envs import make_task
from envs.dataset import EpisodeDataset
from experiments.cli import main
from infra.errors import UserError


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

