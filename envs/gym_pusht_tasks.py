"""The pymunk Push-T of Diffusion Policy (Chi et al. 2023) and LeRobot (the `gym-pusht` package), the
task DINO-WM, PLDM and LeWM plan on, behind this project's task interface as `gym-pusht:push-t`.

The package's simulation and drawing run unchanged (2-D pymunk physics, a 512 x 512 arena, the
round agent driven by a PD controller toward a target point, 10 physics steps of 0.01 s per env
step; frames drawn at 512 px with the fixed green goal region and resized); this file adds what
the planning protocol needs on top of it:

- Actions in [-1, 1]^2 are relative targets, as in DINO-WM's Push-T: the agent is driven toward
  its own position plus `MAX_SHIFT` px times the action (the package takes absolute targets).
- The state is the agent's and the block's positions, the block's angle and their velocities [10];
  it can be read and set, so start/goal pairs, goal images and the simulator ceiling work as for the
  MuJoCo tasks. Starts and random goals follow the package's reset ranges, with the agent clear of
  the block.
- Success is the published planning test (DINO-WM's and stable-worldmodel's `eval_state`): the L2
  norm of the agent's and the block's position errors together below 20 (of 512), and the block's
  angle within pi/9.
- `GymPushTExpert` is a scripted pusher: look-ahead pushes on a scratch copy of the simulation, as
  the project's MuJoCo PushT expert does (`envs/push_t_expert.py`), then a walk to the goal's agent
  position around the block.

`gym-pusht:push-t-fixed` (`GymPushTFixedGoalEnv`) is the package's own imitation task, the one
Diffusion Policy, LeRobot and ACT-JEPA report: every episode aims at the package's fixed goal region
and succeeds by the package's test, the block covering 95% of the region's area. Its expert
(`GymPushTCoverageExpert`) needs the block within about 2 px and 0.03 rad, where the planning test
allows 20 px and 0.35 rad.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import shapely

from envs import push_t
from envs.base import GoalStateTaskEnv, check_image_size, import_package
from envs.push_t import wrap
from infra.errors import UserError

ARENA = 512.0
AGENT_RADIUS = 15.0
MAX_SHIFT = 100.0  # px: how far ahead of the agent an action of norm 1 puts its target
SUBSTEPS, DT = 10, 0.01  # the package's physics steps per env step
# block frame rectangles (x_min, x_max, y_min, y_max) of the package's T (scale 30): the bar, then the stem
T_RECTS = np.array([[-60.0, 60.0, 0.0, 30.0], [-15.0, 15.0, 30.0, 120.0]])
T_RADIUS = 125.0  # farthest point of the T from the block frame's origin
T_CORNERS = np.array([[x, y] for x0, x1, y0, y1 in T_RECTS for x in (x0, x1) for y in (y0, y1)])
WALL_MARGIN = 40.0  # px between a sampled T and the walls: room for the agent to push it from any side
(_BX0, _BX1, _BY0, _BY1), (_SX0, _SX1, _, _SY1) = T_RECTS  # the stem starts where the bar ends (y = 30)
T_OUTLINE = np.array([[_BX0, _BY0], [_BX1, _BY0], [_BX1, _BY1], [_SX1, _BY1], [_SX1, _SY1], [_SX0, _SY1], [_SX0, _BY1], [_BX0, _BY1]])
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # the package's fixed goal region (x, y, angle)
COVERED = 0.95  # the package's success test: the share of the goal region the block covers


def _rotation(angle) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def distance_to_t(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Distance of world points [..., 2] to the package's T at pose (x, y, angle); 0 inside."""
    return push_t.distance_to_t(points, pose, T_RECTS)


def coverage(states: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The share of the goal's T region [...] that the block of each state [..., 10] covers (the
    package's `_get_coverage`: intersection area over the region's area)."""
    states = np.asarray(states, np.float64)
    poses = states.reshape(-1, states.shape[-1])[:, 2:5]
    region = t_polygons(np.asarray(goal, np.float64)[None, 2:5])[0]
    return (shapely.area(shapely.intersection(t_polygons(poses), region)) / region.area).reshape(states.shape[:-1])


def t_polygons(poses: np.ndarray) -> np.ndarray:
    """shapely polygons [N] of the T at poses [N, 3] (x, y, angle)."""
    c, s = np.cos(poses[:, 2]), np.sin(poses[:, 2])
    rotations = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # [N, 2, 2]
    return shapely.polygons(np.einsum("nij,kj->nki", rotations, T_OUTLINE) + poses[:, None, :2])


class GymPushTEnv(GoalStateTaskEnv):
    """gym-pusht's Push-T with relative actions and full-state goals; see the module docstring."""

    default_max_steps = 300  # LeRobot's Push-T episode limit
    tolerance = np.array([20.0, np.pi / 9])
    success_criterion = "agent and block positions within 20 (L2 of both errors together, arena 512) and block angle within pi/9"
    probe_names = ("block_x", "block_y", "block_cos", "block_sin", "agent_x", "agent_y")
    position_names = ("block_x", "block_y")
    # as the project's PushT (envs/push_t.py); 8 colours, which separate the block from the agent, plan
    # worse (BENCHMARKS.md, The published systems' own tasks)
    planning_recipe = {"world_model": {"moments": 4, "proprio": True}}
    state_dim = 10  # agent x, y; block x, y, angle; agent vx, vy; block vx, vy, angular velocity

    def __init__(self, image_size: int = 64, frame_skip: int | None = None, render_mode: str | None = "rgb_array", pixels: bool = True):
        if frame_skip not in (None, SUBSTEPS):
            raise UserError(f"gym-pusht runs at its own {SUBSTEPS} physics steps per env step, got --frame-skip {frame_skip}")
        check_image_size(image_size)
        self.image_size, self.frame_skip, self.render_mode, self.pixels = image_size, SUBSTEPS, render_mode, pixels
        self.sim, self.scratch = self._new_sim(), self._new_sim()  # the episode; the expert's look-ahead and the ceiling's rollouts
        self.canvas = self._new_sim()  # draws set states (goal images): the package draws the last step's contact points, and this one steps no more
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
        self.goal_state = self.get_state()

    def _new_sim(self):
        package = import_package("gym_pusht.envs.pusht", "gym-pusht")
        sim = package.PushTEnv(obs_type="state", observation_width=self.image_size, observation_height=self.image_size)
        sim.reset(seed=0)  # builds the pymunk space
        return sim

    # ---- state -------------------------------------------------------------------------
    def get_state(self, sim=None) -> np.ndarray:
        sim = self.sim if sim is None else sim
        agent, block = sim.agent, sim.block
        return np.array([*agent.position, *block.position, block.angle, *agent.velocity, *block.velocity, block.angular_velocity])

    def set_state(self, state: np.ndarray, sim=None) -> None:
        sim = self.sim if sim is None else sim
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.state_dim,):
            raise UserError(f"{type(self).__name__} state must have shape ({self.state_dim},), got {state.shape}")
        sim.agent.position, sim.agent.velocity = tuple(state[0:2]), tuple(state[5:7])
        sim.block.angle = float(state[4])  # before the position: pymunk turns the body about its centre of gravity
        sim.block.position = tuple(state[2:4])
        sim.block.velocity, sim.block.angular_velocity = tuple(state[7:9]), float(state[9])
        for body in (sim.agent, sim.block):  # pymunk draws shapes where they were last indexed, not where their bodies are
            sim.space.reindex_shapes_for_body(body)

    def random_state(self, rng: np.random.Generator) -> np.ndarray:
        while True:  # the block where the package puts it, whole and clear of the walls
            block = np.array([*rng.uniform(100, 400, 2), rng.uniform(-np.pi, np.pi)])
            corners = T_CORNERS @ _rotation(block[2]).T + block[:2]
            if np.all((corners > WALL_MARGIN) & (corners < ARENA - WALL_MARGIN)):
                break
        while True:  # the agent anywhere the package puts it, clear of the block
            agent = rng.uniform(50, 450, 2)
            if distance_to_t(agent, block) > AGENT_RADIUS + 5:
                return np.concatenate([agent, block, np.zeros(5)])

    def render_state(self, state: np.ndarray | None = None) -> np.ndarray:
        if state is None or not self.pixels:
            return super().render_state(state)
        self.set_state(state, self.canvas)
        return self.draw(self.canvas)

    def draw(self, sim=None) -> np.ndarray:
        return (self.sim if sim is None else sim)._render(visualize=False)  # the package's observation drawing, at the observation size

    def proprio_of(self, state: np.ndarray) -> np.ndarray:
        """Agent position (scaled to [-1, 1]) and velocity (per 512 px)."""
        return np.concatenate([np.asarray(state[0:2]) / ARENA * 2 - 1, np.asarray(state[5:7]) / ARENA]).astype(np.float32)

    def goal_error(self, state, goal):
        positions = np.concatenate([state[..., 0:2] - goal[0:2], state[..., 2:4] - goal[2:4]], -1)
        return np.stack([np.linalg.norm(positions, axis=-1), np.abs(wrap(state[..., 4] - goal[4]))], -1)

    def probe_variables(self, states):
        return np.column_stack([states[:, 2:4], np.cos(states[:, 4]), np.sin(states[:, 4]), states[:, 0:2]])

    # ---- dynamics ----------------------------------------------------------------------
    def advance(self, action: np.ndarray, sim=None, steps: int = 1) -> None:
        """`steps` env steps of one relative action [2] on `sim` (default: the episode's): the
        package's PD drive toward the target and its physics, without its per-step coverage."""
        sim = self.sim if sim is None else sim
        for _ in range(steps):
            position = np.array(sim.agent.position)
            target = np.clip(position + MAX_SHIFT * np.asarray(action, np.float64), 0.0, ARENA)
            for _ in range(SUBSTEPS):
                acceleration = sim.k_p * (target - np.array(sim.agent.position)) - sim.k_v * np.array(sim.agent.velocity)
                sim.agent.velocity = tuple(np.array(sim.agent.velocity) + acceleration * DT)
                sim.space.step(DT)

    def close(self):
        for sim in (self.sim, self.scratch, self.canvas):
            sim.close()


class GymPushTFixedGoalEnv(GymPushTEnv):
    """gym-pusht's own imitation task: every episode aims at the package's fixed goal region, and
    succeeds once the block covers at least 95% of it (the package: more than 95%); the agent's
    place does not count. Starts as `gym-pusht:push-t`; the goal state puts the agent where the
    package's arena starts it, (256, 400), clear of the region."""

    tolerance = np.array([1.0 - COVERED])
    success_criterion = "the block covers 95% of the fixed goal region (gym-pusht's own test)"
    GOAL = np.array([256.0, 400.0, *GOAL_POSE, 0.0, 0.0, 0.0, 0.0, 0.0])

    def reset(self, *, seed=None, options=None):
        options = dict(options or {})
        options.setdefault("goal", self.GOAL.copy())
        return super().reset(seed=seed, options=options)

    def goal_error(self, state, goal):
        return (1.0 - coverage(state, goal))[..., None]


# contact points on the T's outline in the block frame, with outward normals
_CONTACTS = ([([x, 0.0], [0, -1]) for x in (-50, -25, 0, 25, 50)]
             + [([x, 30.0], [0, 1]) for x in (-52, -35, 35, 52)]
             + [([60.0, 15.0], [1, 0]), ([-60.0, 15.0], [-1, 0])]
             + [([sx * 15.0, y], [sx, 0]) for sx in (-1, 1) for y in (50, 80, 110)]
             + [([0.0, 120.0], [0, 1])])
CONTACTS = np.array([p for p, _ in _CONTACTS], float)
NORMALS = np.array([n for _, n in _CONTACTS], float)
KEYPOINTS = np.array([[-60.0, 15.0], [60.0, 15.0], [0.0, 120.0], [0.0, 30.0]])
STANDOFF = AGENT_RADIUS + 4.0  # agent centre's distance from the contact point before a push
SAFE_RADIUS = T_RADIUS + AGENT_RADIUS + 12.0  # circle the agent walks around the block on
WALK = 100.0  # px: how far ahead of the agent its target lies while it walks


def _toward(shift: np.ndarray) -> np.ndarray:
    """The walking action toward a point `shift` [2] px away, its target at most WALK px ahead."""
    return shift / max(np.linalg.norm(shift) / WALK, 1.0) / MAX_SHIFT


def _keypoints(pose: np.ndarray) -> np.ndarray:
    """World positions [4, 2] of the T's bar ends, stem end and bar centre at pose (x, y, angle)."""
    return KEYPOINTS @ _rotation(pose[2]).T + pose[:2]


class GymPushTExpert:
    """Look-ahead push selection, then a walk to the goal's agent position around the block."""

    def __init__(self, env: GymPushTEnv, speeds: tuple = (1.0, 0.5, 0.2), lengths: tuple = (4,), placed: float = 6.0,
                 min_gain: float = 0.5):
        self.env, self.speeds, self.lengths, self.placed, self.min_gain = env, speeds, lengths, placed, min_gain
        self.reset()

    def reset(self) -> None:
        self.plan = None  # (push direction [2], speed, steps left)
        self.waypoints: list = []
        self.unimproved = None  # the block pose from which no push improved (the search depends on nothing else)

    def _cost(self, state: np.ndarray) -> float:
        """Mean distance of the T's keypoints to where the goal pose puts them (couples angle and position)."""
        return float(np.linalg.norm(_keypoints(state[2:5]) - _keypoints(self.env.goal_state[2:5]), axis=-1).mean())

    def _trials(self, state: np.ndarray):
        """Every candidate push from the current block pose, simulated on the scratch copy:
        (start, direction, speed, steps, the cost after it)."""
        env, pose = self.env, state[2:5]
        rotation = _rotation(pose[2])
        points, normals = CONTACTS @ rotation.T + pose[:2], NORMALS @ rotation.T
        for start, normal in zip(points + normals * STANDOFF, normals):
            if np.any(start < AGENT_RADIUS + 8) or np.any(start > ARENA - AGENT_RADIUS - 8):
                continue
            for speed in self.speeds:
                trial = state.copy()
                trial[0:2], trial[5:] = start, 0.0
                env.set_state(trial, env.scratch)
                for steps in range(1, max(self.lengths) + 1):  # one simulation gives every length
                    env.advance(-normal * speed, env.scratch)
                    if steps in self.lengths:
                        yield start, -normal, speed, steps, self._cost(env.get_state(env.scratch))

    def _choose_push(self, state: np.ndarray):
        """The push that leaves the lowest cost, each better one by `min_gain` (start, direction, speed, steps), or None."""
        best, best_cost = None, self._cost(state)
        for *push, cost in self._trials(state):
            if cost < best_cost - self.min_gain:
                best, best_cost = tuple(push), cost
        return best

    def _path(self, agent: np.ndarray, target: np.ndarray, pose: np.ndarray, approach: np.ndarray | None = None) -> list:
        """Waypoints from the agent to `target` that stay clear of the block: straight if the segment
        is clear, else out to a circle around the block, along it, and in (along `approach`, the
        push's outward normal, when given)."""
        segment = agent + np.linspace(0, 1, 24)[:, None] * (target - agent)
        if np.all(distance_to_t(segment[1:], pose) > AGENT_RADIUS + 2):
            return [target]
        centre, rel = pose[:2], target - pose[:2]
        if approach is not None:  # the point on the push's outward ray at SAFE_RADIUS from the centre
            b, c = rel @ approach, rel @ rel - SAFE_RADIUS**2
            entry = target + approach * (-b + np.sqrt(max(b * b - c, 0.0)))
        else:
            entry = centre + rel / max(np.linalg.norm(rel), 1e-6) * SAFE_RADIUS
        here, there = np.arctan2(*(agent - centre)[::-1]), np.arctan2(*(entry - centre)[::-1])
        turn = wrap(there - here)
        angles = here + turn * np.linspace(0, 1, max(int(abs(turn) / 0.3), 1) + 1)
        circle = centre + SAFE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], -1)
        inside = lambda p: np.clip(p, AGENT_RADIUS + 8, ARENA - AGENT_RADIUS - 8)  # noqa: E731
        return [inside(p) for p in circle] + [inside(entry), target]

    def _walk(self, agent: np.ndarray) -> np.ndarray | None:
        """The action toward the next waypoint (None once they are all reached)."""
        while self.waypoints:
            close = 3.0 if len(self.waypoints) == 1 else 10.0
            if np.linalg.norm(agent - self.waypoints[0]) > close:
                return _toward(self.waypoints[0] - agent)  # aim at the waypoint itself
            self.waypoints.pop(0)
        return None

    def __call__(self) -> np.ndarray:
        env = self.env
        state, goal = env.get_state(), env.goal_state
        agent = state[0:2]
        if self.plan is not None:
            direction, speed, left = self.plan
            if not self.waypoints:
                self.plan = None if left <= 1 else (direction, speed, left - 1)
                return direction * speed
            action = self._walk(agent)
            return action if action is not None else self.__call__()
        block_done = (np.linalg.norm(state[2:4] - goal[2:4]) < self.placed and abs(wrap(state[4] - goal[4])) < 0.1)
        if not block_done and not np.array_equal(state[2:5], self.unimproved):
            push = self._choose_push(state)
            if push is None:
                self.unimproved = state[2:5].copy()
            else:
                start, direction, speed, steps = push
                self.plan = (direction, speed, steps)
                self.waypoints = self._path(agent, start, state[2:5], approach=-direction)
                return self.__call__()
        # the block is placed (or no push improves it): walk to the goal's agent position, around the block
        if not self.waypoints or np.linalg.norm(self.waypoints[-1] - goal[0:2]) > 1e-6:
            self.waypoints = self._path(agent, goal[0:2], state[2:5])
        action = self._walk(agent)
        return np.zeros(2) if action is None else action


WALK_SPEED = 25.0  # px per env step the walk averages (with PURSUIT_LOOKAHEAD)
PURSUIT_LOOKAHEAD = 60.0  # px along the path ahead of the agent that the walk aims at
PUSH_OVERHEAD = 2.0  # env steps a push costs beyond its own (settling at its start)


class GymPushTCoverageExpert(GymPushTExpert):
    """The expert for the coverage test (`gym-pusht:push-t-fixed`): finer pushes (speeds down to 0.05,
    one to four steps), the one chosen that removes the most cost per env step it takes (the walk to
    its start included), and a walk that aims PURSUIT_LOOKAHEAD px ahead along its path (pure
    pursuit) instead of slowing at every waypoint; it holds still once the block covers the region.
    With `GymPushTExpert`'s pushes it stalls at 74-95% coverage, and with its walk it runs past the
    package's 300 steps."""

    def __init__(self, env: GymPushTEnv):
        super().__init__(env, speeds=(1.0, 0.5, 0.2, 0.1, 0.05), lengths=(1, 2, 4), placed=0.0, min_gain=0.05)

    def __call__(self) -> np.ndarray:
        return np.zeros(2) if self.env.is_success() else super().__call__()  # once the block covers the region, hold still

    def _choose_push(self, state: np.ndarray):
        now, best, best_rate, walks = self._cost(state), None, 0.0, {}
        for start, direction, speed, steps, cost in self._trials(state):
            key = tuple(start)
            if key not in walks:
                path = [state[0:2], *self._path(state[0:2], start, state[2:5], approach=-direction)]
                walks[key] = sum(np.linalg.norm(b - a) for a, b in zip(path, path[1:])) / WALK_SPEED
            rate = (now - cost) / (walks[key] + steps + PUSH_OVERHEAD)
            if now - cost > self.min_gain and rate > best_rate:
                best, best_rate = (start, direction, speed, steps), rate
        return best

    def _walk(self, agent: np.ndarray) -> np.ndarray | None:
        """The action toward the point PURSUIT_LOOKAHEAD px ahead along the path, up to the turn before
        its end (the push's approach stays straight); None once the end is reached."""
        while self.waypoints:  # drop the waypoints reached, or passed on the way to the next
            passed = len(self.waypoints) > 2 and np.linalg.norm(agent - self.waypoints[1]) <= np.linalg.norm(self.waypoints[0] - self.waypoints[1])
            if np.linalg.norm(agent - self.waypoints[0]) > (3.0 if len(self.waypoints) == 1 else 10.0) and not passed:
                break
            self.waypoints.pop(0)
        if not self.waypoints:
            return None
        route, left = [agent, *(self.waypoints[:-1] if len(self.waypoints) > 1 else self.waypoints)], PURSUIT_LOOKAHEAD
        target = route[-1]
        for a, b in zip(route, route[1:]):
            length = np.linalg.norm(b - a)
            if length >= left:
                target = a + (b - a) * left / length
                break
            left -= length
        return _toward(target - agent)
