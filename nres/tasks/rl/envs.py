"""The MuJoCo environments the ``rl`` task learns on, read from gymnasium.

An :class:`EnvSpec` holds what both physics back ends need from a gymnasium ``-v5``
environment: its compiled ``mujoco.MjModel`` (from the XML gymnasium ships), the number of
MuJoCo substeps per environment step (``frame_skip``), and the environment's own weights,
ranges and observation flags, read from the gymnasium object itself. Each environment is
a :class:`_Definition`, a few lines of data in :data:`SUPPORTED`; every formula is
written once, for numpy and ``jax.numpy`` alike (``xp``), and used by the CPU physics
(float64, host) and by MJX (float32).

The formulas read *quantities* (:data:`_QUANTITIES`) of the state after a step: ``qpos``,
``qvel`` and the ``MjData`` fields gymnasium reads (``xpos``, ``xipos``, ``site_xpos``,
``cinert``, ``cvel``, ``qfrc_actuator``, ``qfrc_constraint``, ``cfrc_ext``) as gymnasium's
``data`` holds them: after ``mj_step`` the derived fields of the last substep's forward
pass, and ``cfrc_ext`` after ``mj_rnePostConstraint``; after ``mj_forward`` at a reset
(where ``cfrc_ext`` is still zero). A back end hands them over as a dict ``d`` of arrays
``[..., *shape]`` holding ``qpos``, ``qvel`` and the fields :attr:`EnvSpec.derived` names.

* observation: the concatenation of :class:`Part` blocks -- ``qpos[skip:]``, ``qvel``
  (clipped to ``[-10, 10]`` for Hopper, Walker2d, InvertedDoublePendulum), ``sin``/``cos``
  of hinge angles, clipped constraint forces, contact forces ``cfrc_ext[1:]``, body
  inertias and velocities, actuator forces, the fingertip-to-target vector -- with the
  blocks gymnasium's ``include_*``/``exclude_*`` flags select,
* health: every :class:`Check` holds (a quantity inside gymnasium's range, open or
  closed as gymnasium compares, or finite); an unhealthy state ends the episode when
  gymnasium terminates on it (``terminated``),
* reward ``r = (b_1 + b_2 + ...) - (c_11 + c_12 + ...) - (c_21 + ...) ...``: bonus terms
  summed, then each group of cost terms subtracted, in gymnasium's order so float64
  rewards are bit-identical. The terms (:data:`_TERMS`): forward velocity
  ``w_fwd * (p_after - p_before) / dt`` of a ``progress`` position (root ``qpos[0]``,
  Ant's torso ``xpos``, Humanoid's mass centre), healthy bonus, control cost ``w_ctrl *
  sum(a^2)`` on the unclipped action (MuJoCo clamps the control to ``ctrlrange``
  itself), contact costs (Ant clips the forces, Humanoid the cost), the double
  pendulum's tip distance and joint velocity penalties, Reacher's distance to target;
  ``dt = frame_skip * timestep``. The SPEC's loss is ``-r``,
* reset ``qpos = init_qpos + U(-s, s)``, ``qvel = init_qvel + U(-s, s)`` or ``+ s N(0, 1)``,
  and Reacher's target drawn uniformly in a disc of radius 0.2, from a JAX key.

Ant's and Humanoid's progress positions are derived fields, which gymnasium reads as the
previous step left them; the position after a step is therefore carried in the physics
state to be the next step's ``p_before`` (:attr:`EnvSpec.carries_progress`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

Bounds = Union[tuple, str, None]  # (low, high), a gymnasium attribute holding one, or None


class _Quantity(NamedTuple):
    fields: tuple  # MjData fields it reads besides qpos and qvel
    ndim: int  # dimensions per environment
    value: Callable  # (spec, d, xp) -> array [..., *shape]


def _mass_center_x(spec, d, xp):
    """gymnasium's Humanoid ``mass_center``: ``einsum('b,bj->j', body_mass, xipos) / sum(body_mass)``, x."""
    mass = np.asarray(spec.model.body_mass)
    return xp.einsum("b,...bj->...j", mass, d["xipos"])[..., 0] / mass.sum()


_QUANTITIES = {
    "qpos": _Quantity((), 1, lambda s, d, xp: d["qpos"]),
    "qvel": _Quantity((), 1, lambda s, d, xp: d["qvel"]),
    "state": _Quantity((), 1, lambda s, d, xp: xp.concatenate([d["qpos"], d["qvel"]], axis=-1)),
    "observation": _Quantity((), 1, lambda s, d, xp: s.observe(d, xp)),
    "tip": _Quantity(("site_xpos",), 1, lambda s, d, xp: d["site_xpos"][..., 0, :]),  # site 0, as gymnasium
    "reach": _Quantity(("xpos",), 1, lambda s, d, xp: d["xpos"][..., s.reach_bodies[0], :]
                       - d["xpos"][..., s.reach_bodies[1], :]),
    "root_x": _Quantity((), 0, lambda s, d, xp: d["qpos"][..., 0]),
    "body_x": _Quantity(("xpos",), 0, lambda s, d, xp: d["xpos"][..., s.progress_body, 0]),
    "mass_center_x": _Quantity(("xipos",), 0, _mass_center_x),
    **{name: _Quantity((name,), ndim, lambda s, d, xp, name=name: d[name])
       for name, ndim in (("qfrc_constraint", 1), ("qfrc_actuator", 1), ("cfrc_ext", 2), ("cinert", 2),
                          ("cvel", 2))},
}


class _Term(NamedTuple):
    quantities: tuple  # quantities it reads
    value: Callable  # (spec, before, after, action, healthy, d, xp) -> [...]


def _sum_squares(x, xp):
    """``sum(x^2)`` over the last two axes, as numpy sums a flattened ``[nbody, 6]`` array."""
    x = xp.square(x)
    return xp.sum(xp.reshape(x, x.shape[:-2] + (-1,)), axis=-1)


def _norm(x, xp):
    """Euclidean norm over the last axis as ``np.linalg.norm`` of one vector computes it,
    ``sqrt(x . x)``: a stacked matrix product rounds as its ``dot`` does (a sum of squares may not)."""
    return xp.sqrt((x[..., None, :] @ x[..., :, None])[..., 0, 0])


_TERMS = {
    "forward": _Term((), lambda s, p0, p1, a, h, d, xp: s.forward_reward_weight * ((p1 - p0) / s.dt)),
    "healthy": _Term((), lambda s, p0, p1, a, h, d, xp: h * s.healthy_reward),
    "ctrl": _Term((), lambda s, p0, p1, a, h, d, xp: s.ctrl_cost_weight * xp.sum(xp.square(a), axis=-1)),
    # Ant: the forces are clipped to contact_force_range, then squared and summed
    "contact_forces": _Term(("cfrc_ext",), lambda s, p0, p1, a, h, d, xp: s.contact_cost_weight * _sum_squares(
        xp.clip(d["cfrc_ext"], *s.contact_force_range), xp)),
    # Humanoid: the weighted sum of squares is clipped to contact_cost_range
    "contact_cost": _Term(("cfrc_ext",), lambda s, p0, p1, a, h, d, xp: xp.clip(
        s.contact_cost_weight * _sum_squares(d["cfrc_ext"], xp), *s.contact_cost_range)),
    # InvertedDoublePendulum (gymnasium's constants): 0.01 x^2 + (y - 2)^2 of the tip site
    "tip_distance": _Term(("tip",), lambda s, p0, p1, a, h, d, xp: 0.01 * xp.square(s.quantity("tip", d, xp)[..., 0])
                          + xp.square(s.quantity("tip", d, xp)[..., 2] - 2)),
    "tip_velocity": _Term((), lambda s, p0, p1, a, h, d, xp: 0.001 * xp.square(d["qvel"][..., 1])
                          + 0.005 * xp.square(d["qvel"][..., 2])),
    # Reacher: w_dist * |fingertip - target| (3-d, body positions)
    "target_distance": _Term(("reach",), lambda s, p0, p1, a, h, d, xp: s.distance_weight * _norm(
        s.quantity("reach", d, xp), xp)),
}


@dataclasses.dataclass(frozen=True)
class Part:
    """One observation block: ``clip(fn(quantity[..., start:stop]))``, flattened per environment.

    ``clip`` is ``(low, high)`` or the gymnasium attribute holding it; ``flag`` names
    gymnasium's ``include_*`` attribute that leaves the block out when false; with
    ``positions``, ``start`` counts root positions that gymnasium's
    ``exclude_current_positions_from_observation`` leaves out (0 when it is false).
    """

    quantity: str
    start: int = 0
    stop: Optional[int] = None
    fn: Optional[str] = None  # None, "sin" or "cos"
    clip: Bounds = None
    flag: Optional[str] = None
    positions: bool = False


@dataclasses.dataclass(frozen=True)
class Check:
    """A health condition: ``quantity[..., index]`` (or all of ``quantity[..., start:]``)
    inside ``bounds`` (open interval, or closed with ``closed``), or finite if ``bounds`` is None."""

    quantity: str
    index: Optional[int] = None
    start: int = 0
    bounds: Bounds = None
    closed: bool = False

    def holds(self, x, xp):
        x = x[..., self.index] if self.index is not None else x[..., self.start:]
        if self.bounds is None:
            ok = xp.isfinite(x)
        else:
            low, high = self.bounds
            ok = ((low <= x) & (x <= high)) if self.closed else ((low < x) & (x < high))
        return ok if self.index is not None else xp.all(ok, axis=-1)


@dataclasses.dataclass(frozen=True)
class _Definition:
    """How one gymnasium environment observes, rewards, terminates and resets."""

    observation: tuple  # of Part
    bonuses: tuple = ("forward",)  # terms added
    costs: tuple = (("ctrl",),)  # groups of terms, each group summed then subtracted
    progress: Optional[str] = "root_x"  # the quantity whose velocity is rewarded
    health: tuple = ()  # of Check
    qvel_noise: str = "uniform"  # "uniform" or "normal" reset noise on qvel
    reset_scales: Optional[tuple] = None  # (qpos, qvel) noise scales where gymnasium has no attribute
    target_radius: Optional[float] = None  # Reacher: qpos[-2:] uniform in this disc, qvel[-2:] = 0
    reach_bodies: Optional[tuple] = None  # Reacher: bodies whose difference is observed
    ctrl_weight: str = "_ctrl_cost_weight"  # gymnasium attribute of the control cost weight


def _locomotion(skipped: int, *extra: Part, qvel_clip: Optional[float] = None) -> tuple:
    """``qpos[skipped:], qvel`` (+ extra blocks): the locomotion observations."""
    clip = None if qvel_clip is None else (-qvel_clip, qvel_clip)
    return (Part("qpos", skipped, positions=True), Part("qvel", clip=clip)) + extra


_HOPPER_HEALTH = (Check("qpos", 1, bounds="_healthy_z_range"), Check("qpos", 2, bounds="_healthy_angle_range"))

SUPPORTED = {
    "Swimmer-v5": _Definition(_locomotion(2)),
    "HalfCheetah-v5": _Definition(_locomotion(1), qvel_noise="normal"),
    "Hopper-v5": _Definition(_locomotion(1, qvel_clip=10.0), bonuses=("forward", "healthy"), health=_HOPPER_HEALTH
                             + (Check("state", start=2, bounds="_healthy_state_range"),)),
    "Walker2d-v5": _Definition(_locomotion(1, qvel_clip=10.0), bonuses=("forward", "healthy"),
                               health=_HOPPER_HEALTH),
    "InvertedPendulum-v5": _Definition(_locomotion(0), bonuses=("healthy",), costs=(), progress=None,
                                       health=(Check("observation"), Check("qpos", 1, bounds=(-0.2, 0.2),
                                                                           closed=True))),
    "InvertedDoublePendulum-v5": _Definition(
        (Part("qpos", 0, 1), Part("qpos", 1, fn="sin"), Part("qpos", 1, fn="cos"), Part("qvel", clip=(-10, 10)),
         Part("qfrc_constraint", 0, 1, clip=(-10, 10))),
        bonuses=("healthy",), costs=(("tip_distance",), ("tip_velocity",)), progress=None,
        health=(Check("tip", 2, bounds=(1.0, float("inf"))),), qvel_noise="normal"),
    "Reacher-v5": _Definition(
        (Part("qpos", 0, 2, fn="cos"), Part("qpos", 0, 2, fn="sin"), Part("qpos", 2), Part("qvel", 0, 2),
         Part("reach", 0, 2)),
        bonuses=(), costs=(("target_distance", "ctrl"),), progress=None, reset_scales=(0.1, 0.005),
        target_radius=0.2, reach_bodies=("fingertip", "target"), ctrl_weight="_reward_control_weight"),
    "Ant-v5": _Definition(
        _locomotion(2, Part("cfrc_ext", 1, clip="_contact_force_range", flag="_include_cfrc_ext_in_observation")),
        bonuses=("forward", "healthy"), costs=(("ctrl", "contact_forces"),), progress="body_x",
        health=(Check("state"), Check("qpos", 2, bounds="_healthy_z_range", closed=True)), qvel_noise="normal"),
    "Humanoid-v5": _Definition(
        _locomotion(2, Part("cinert", 1, flag="_include_cinert_in_observation"),
                    Part("cvel", 1, flag="_include_cvel_in_observation"),
                    Part("qfrc_actuator", 6, flag="_include_qfrc_actuator_in_observation"),
                    Part("cfrc_ext", 1, flag="_include_cfrc_ext_in_observation")),
        bonuses=("forward", "healthy"), costs=(("ctrl", "contact_cost"),), progress="mass_center_x",
        health=(Check("qpos", 2, bounds="_healthy_z_range"),)),
}


@dataclasses.dataclass(frozen=True, eq=False)
class EnvSpec:
    """A supported gymnasium MuJoCo environment (build it with :func:`load_env`).

    Attributes:
      env_id: the gymnasium id, e.g. ``"Swimmer-v5"``.
      model: the environment's ``mujoco.MjModel``.
      frame_skip: MuJoCo substeps per environment step.
      dt: seconds per environment step (``frame_skip * model.opt.timestep``).
      obs_dim: observation size (gymnasium's ``observation_space.shape[0]``).
      observation: the :class:`Part` blocks, ranges and flags resolved.
      health: the :class:`Check` conditions, ranges resolved.
      bonuses, costs, progress: the reward's terms (see the module) and the quantity
        whose velocity ``forward`` rewards (None if none).
      forward_reward_weight, ctrl_cost_weight, contact_cost_weight, distance_weight,
        healthy_reward, terminate_when_unhealthy, contact_force_range,
        contact_cost_range: gymnasium's values (ranges ``(low, high)``; 0/None if absent).
      reset_noise_scale, qvel_noise_scale: reset noise on ``qpos`` and ``qvel``.
      qvel_noise: ``"uniform"`` or ``"normal"`` reset noise on the velocities.
      init_qpos, init_qvel: the model's initial ``qpos`` ``[nq]`` and ``qvel`` ``[nv]``.
      target_radius: Reacher's target disc (None for the others).
      progress_body: Ant's ``main_body`` id; reach_bodies: Reacher's (fingertip, target) ids.
    """

    env_id: str
    model: object
    frame_skip: int
    dt: float
    forward_reward_weight: float
    ctrl_cost_weight: float
    reset_noise_scale: float
    qvel_noise: str
    init_qpos: np.ndarray
    init_qvel: np.ndarray
    observation: tuple = ()
    health: tuple = ()
    bonuses: tuple = ()
    costs: tuple = ()
    progress: Optional[str] = None
    obs_dim: int = 0
    qvel_noise_scale: float = 0.0
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False
    contact_cost_weight: float = 0.0
    contact_force_range: Optional[tuple] = None
    contact_cost_range: Optional[tuple] = None
    distance_weight: float = 0.0
    target_radius: Optional[float] = None
    progress_body: int = 0
    reach_bodies: Optional[tuple] = None

    @property
    def can_terminate(self) -> bool:
        """True when an episode may end before ``T`` (an unhealthy state terminates)."""
        return bool(self.health) and self.terminate_when_unhealthy

    @property
    def action_dim(self) -> int:
        return self.model.nu

    @property
    def action_bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """gymnasium's action space ``(low, high)``, each ``[action_dim]``: the actuators'
        ``ctrlrange`` (every supported environment limits its controls)."""
        low, high = np.asarray(self.model.actuator_ctrlrange, np.float64).T
        return tuple(low.tolist()), tuple(high.tolist())

    @functools.cached_property
    def derived(self) -> tuple:
        """MjData fields (besides ``qpos``, ``qvel``) the formulas read, sorted."""
        names = [p.quantity for p in self.observation] + [c.quantity for c in self.health]
        names += [q for term in self.bonuses + sum(self.costs, ()) for q in _TERMS[term].quantities]
        names += [self.progress] if self.progress else []
        return tuple(sorted({f for name in names for f in _QUANTITIES[name].fields}))

    @property
    def carries_progress(self) -> bool:
        """True when the progress position is a derived field, carried from step to step."""
        return self.progress is not None and bool(_QUANTITIES[self.progress].fields)

    def fields(self, data) -> dict:
        """``qpos``, ``qvel`` and the :attr:`derived` fields of one ``MjData`` (copies)."""
        return {name: np.array(getattr(data, name)) for name in ("qpos", "qvel") + self.derived}

    def quantity(self, name: str, d: dict, xp=np):
        """The quantity ``name`` (see :data:`_QUANTITIES`) of the fields ``d``."""
        return _QUANTITIES[name].value(self, d, xp)

    def observe(self, d: dict, xp=np):
        """Observation ``[..., obs_dim]`` of the fields ``d``."""
        blocks = []
        for part in self.observation:
            ndim = _QUANTITIES[part.quantity].ndim
            x = self.quantity(part.quantity, d, xp)[(Ellipsis, slice(part.start, part.stop)) + (slice(None),) * (ndim - 1)]
            if part.fn is not None:
                x = getattr(xp, part.fn)(x)
            if part.clip is not None:
                x = xp.clip(x, *part.clip)
            blocks.append(xp.reshape(x, x.shape[:x.ndim - ndim] + (-1,)))
        return xp.concatenate(blocks, axis=-1)

    def healthy(self, d: dict, xp=np):
        """Bool ``[...]``: gymnasium's ``is_healthy`` (every :class:`Check` holds)."""
        ok = xp.ones(d["qpos"].shape[:-1], bool)
        for check in self.health:
            ok = ok & check.holds(self.quantity(check.quantity, d, xp), xp)
        return ok

    def terminated(self, healthy, xp=np):
        """Bool ``[...]``: the episode ends (an unhealthy state, when gymnasium terminates on it)."""
        return ~healthy if self.can_terminate else xp.zeros(xp.shape(healthy), bool)

    def progress_position(self, d: dict, xp=np):
        """The position ``[...]`` whose change per ``dt`` the ``forward`` term rewards (None if none)."""
        return None if self.progress is None else self.quantity(self.progress, d, xp)

    def reward(self, x_before, x_after, action, xp=np, healthy=None, d=None):
        """Reward ``[...]`` of one step that moved the progress position from ``x_before`` to
        ``x_after`` under ``action [..., nu]`` into the state of fields ``d`` (needed by the
        terms that read quantities) whose health is ``healthy`` (needed by ``healthy``)."""
        value = lambda term: _TERMS[term].value(self, x_before, x_after, action, healthy, d, xp)
        total = 0.0
        for i, term in enumerate(self.bonuses):
            total = value(term) if i == 0 else total + value(term)
        for group in self.costs:
            cost = value(group[0])
            for term in group[1:]:
                cost = cost + value(term)
            total = total - cost
        return total

    def reset_noise(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Initial ``(qpos [nq], qvel [nv])`` of one episode (float32 JAX arrays)."""
        k_pos, k_vel = jax.random.split(key)
        scale, vscale = self.reset_noise_scale, self.qvel_noise_scale
        nq, nv = self.model.nq, self.model.nv
        qpos = jnp.asarray(self.init_qpos, jnp.float32) + jax.random.uniform(k_pos, (nq,), minval=-scale, maxval=scale)
        if self.qvel_noise == "normal":
            noise = vscale * jax.random.normal(k_vel, (nv,))
        else:
            noise = jax.random.uniform(k_vel, (nv,), minval=-vscale, maxval=vscale)
        qvel = jnp.asarray(self.init_qvel, jnp.float32) + noise
        if self.target_radius is not None:
            qpos = qpos.at[-2:].set(_in_disc(jax.random.fold_in(key, 1), self.target_radius))
            qvel = qvel.at[-2:].set(0.0)
        return qpos, qvel


def _in_disc(key: jax.Array, radius: float) -> jax.Array:
    """A point ``[2]`` uniform in the open disc: gymnasium's rejection sampling from the square."""

    def draw(carry):
        key, _ = carry
        key, sub = jax.random.split(key)
        return key, jax.random.uniform(sub, (2,), minval=-radius, maxval=radius)

    outside = lambda carry: jnp.linalg.norm(carry[1]) >= radius
    return jax.lax.while_loop(outside, draw, draw((key, jnp.zeros(2))))[1]


def make_gym_env(env_id: str, **kwargs):
    """``gymnasium.make(env_id)`` with a clear ``ValueError`` for an unknown name."""
    import gymnasium as gym

    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        known = ", ".join(SUPPORTED)
        raise ValueError(f"unknown environment {env_id!r} ({err}); supported: {known}") from None


def quiet_make(env_id: str, **kwargs):
    """``make_gym_env`` without gymnasium's and MuJoCo's compile-time warnings.

    gymnasium's HalfCheetah XML uses an attribute MuJoCo 3.17 deprecates; MuJoCo's
    default handler would append that to ``MUJOCO_LOG.TXT`` in the working directory.
    """
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make_gym_env(env_id, **kwargs)
    finally:
        mujoco.set_mju_user_warning(previous)


def _range(raw, bounds: Bounds) -> Optional[tuple]:
    """``bounds`` as floats ``(low, high)``: given, or gymnasium's attribute of that name (None if absent)."""
    value = getattr(raw, bounds, None) if isinstance(bounds, str) else bounds
    return None if value is None else (float(value[0]), float(value[1]))


def _resolve_observation(raw, parts: tuple) -> tuple:
    """The blocks gymnasium's flags select, clip ranges read from it."""
    exclude = bool(getattr(raw, "_exclude_current_positions_from_observation", True))
    return tuple(
        dataclasses.replace(part, clip=_range(raw, part.clip), flag=None,
                            start=part.start if exclude or not part.positions else 0)
        for part in parts if part.flag is None or bool(getattr(raw, part.flag))
    )


def _observation_size(spec: EnvSpec) -> int:
    """Observation size, from the model's initial state after ``mj_forward``."""
    import mujoco

    data = mujoco.MjData(spec.model)
    mujoco.mj_forward(spec.model, data)
    return int(spec.observe(spec.fields(data)).shape[-1])


@functools.lru_cache(maxsize=None)
def load_env(env_id: str) -> EnvSpec:
    """Read a gymnasium environment into an :class:`EnvSpec`; raise ``ValueError`` if unusable.

    Errors name the value: an id gymnasium does not know, an environment whose action
    space is not continuous (``Box``), or a continuous one this task has no reward for.
    """
    import gymnasium as gym

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env must be a gymnasium id such as 'Swimmer-v5', got {env_id!r}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = quiet_make(env_id)
    try:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(
                f"environment {env_id!r} has a non-continuous action space {space}; "
                f"policies here output real-valued actions (supported: {', '.join(SUPPORTED)})"
            )
        if env_id not in SUPPORTED:
            raise ValueError(
                f"environment {env_id!r} is continuous but not supported (observation, reward, termination and "
                f"reset are defined for {', '.join(SUPPORTED)})"
            )
        raw = env.unwrapped
        kind = SUPPORTED[env_id]
        model = raw.model
        qpos_scale, qvel_scale = kind.reset_scales or (raw._reset_noise_scale, raw._reset_noise_scale)
        main_body = getattr(raw, "_main_body", 0)
        spec = EnvSpec(
            env_id=env_id,
            model=model,
            frame_skip=int(raw.frame_skip),
            dt=float(raw.dt),
            forward_reward_weight=float(getattr(raw, "_forward_reward_weight", 0.0)),
            ctrl_cost_weight=float(getattr(raw, kind.ctrl_weight, 0.0)),
            reset_noise_scale=float(qpos_scale),
            qvel_noise=kind.qvel_noise,
            init_qpos=np.array(raw.init_qpos, np.float64),
            init_qvel=np.array(raw.init_qvel, np.float64),
            observation=_resolve_observation(raw, kind.observation),
            health=tuple(dataclasses.replace(c, bounds=_range(raw, c.bounds)) for c in kind.health),
            bonuses=kind.bonuses,
            costs=kind.costs,
            progress=kind.progress,
            qvel_noise_scale=float(qvel_scale),
            # InvertedPendulum has no attribute: its reward is int(not terminated)
            healthy_reward=float(getattr(raw, "_healthy_reward", 1.0)),
            # the pendulums have no attribute: they always end when unhealthy
            terminate_when_unhealthy=bool(getattr(raw, "_terminate_when_unhealthy", True)),
            contact_cost_weight=float(getattr(raw, "_contact_cost_weight", 0.0)),
            contact_force_range=_range(raw, "_contact_force_range"),
            contact_cost_range=_range(raw, "_contact_cost_range"),
            distance_weight=float(getattr(raw, "_reward_dist_weight", 0.0)),
            target_radius=kind.target_radius,
            progress_body=int(model.body(main_body).id),
            reach_bodies=None if kind.reach_bodies is None else tuple(model.body(b).id for b in kind.reach_bodies),
        )
        return dataclasses.replace(spec, obs_dim=_observation_size(spec))
    finally:
        env.close()
