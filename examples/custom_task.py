"""Write your own task: a driven, damped 1-D system fitted to a target curve.

Run it as a script (`python examples/custom_task.py`) to train with the Python API, or
from the command line through its ``ENTRY``:
`cd examples && nres train --task custom_task:ENTRY --iterations 200`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import nres
from nres.tasks import TaskEntry

T = 60  # horizon: steps per episode
targets = jnp.sin(jnp.linspace(0.0, 3.0, T))


def init_theta(key):  # theta = (drive amplitude, log damping)
    return jnp.array([0.0, 0.0])


def init_state(key):  # s_0: the system starts at rest
    return jnp.zeros(())


def step(theta, x, t, key, batch):  # s_{t+1} = f(s_t, theta, x_t, key_t)
    drive, log_damping = theta
    return x + 0.1 * (drive * jnp.cos(0.05 * t) - jnp.exp(log_damping) * x) + 0.01 * batch


def loss(theta, x, t, batch):  # L_{t+1}: squared distance to the target curve
    return (x - targets[t]) ** 2


def sample_batch(key, t):  # per-step data; both members of an antithetic pair share it
    return jax.random.normal(key)


task = nres.Task(init_theta, init_state, step, loss, horizon=T, sample_batch=sample_batch)


def main(iterations: int = 400) -> tuple[float, float]:
    estimator = nres.nres(task, num_particles=64, unroll_length=10, sigma=0.05)
    optimizer = optax.adam(0.05)
    theta = task.init_theta(jax.random.PRNGKey(0))
    opt_state = optimizer.init(theta)
    est_state = estimator.init(jax.random.PRNGKey(1), theta)

    @jax.jit
    def update(theta, opt_state, est_state):
        grad, est_state, info = estimator.estimate(est_state, theta)  # one compiled window
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, est_state, info

    losses = []
    for i in range(iterations):
        theta, opt_state, est_state, info = update(theta, opt_state, est_state)
        losses.append(float(info.train_loss))
        if i % 100 == 0:
            print(f"update {i:3d}: train loss {losses[-1]:.4f}")
    start, end = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    print(f"theta = {theta}; mean train loss of the first 20 updates {start:.4f}, of the last 20 {end:.4f}")
    return start, end


# For the command line: the task's options (each becomes a flag) and its default settings.
@dataclasses.dataclass(frozen=True)
class Options:
    """Options of the custom task (each field is a flag of `nres train`).

    Attributes:
      horizon: T, steps per episode (a field named horizon is what --horizon sets).
    """

    horizon: int = T


ENTRY = TaskEntry(
    name="custom",
    config_cls=Options,
    build=lambda options: task._replace(horizon=options.horizon),
    training_defaults={"num_particles": 64, "unroll_length": 10, "sigma": 0.05, "optimizer": "adam",
                       "lr": 0.05, "iterations": 400},
)

if __name__ == "__main__":
    main()
