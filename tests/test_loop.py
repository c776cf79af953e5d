"""The training loop (:mod:`nres.loop`) without any file: what it reports, in which
order, what its clock counts, and how it stops."""

import signal

import jax.numpy as jnp
import numpy as np
import pytest

from nres.build import resolve_config
from nres.loop import Schedule, Stopped, chunk_size, Pacer, train_loop
from nres.task import Task
from nres.training import Trainer


class FakeClock:
    """Time that passes only when a test says so (seconds)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Recorder:
    """Callbacks that record the loop's reports and how many chunks were in flight."""

    def __init__(self, trainer, clock, eval_seconds=0.0, stop_after_chunks=None):
        self.events, self.in_flight, self.clock = [], [0], clock
        self.eval_seconds, self.stop_after_chunks = eval_seconds, stop_after_chunks
        launch, collect = trainer.launch, trainer.collect

        def counted_launch(*args, **kwargs):
            self.in_flight[0] += 1
            return launch(*args, **kwargs)

        def counted_collect(*args, **kwargs):
            self.in_flight[0] -= 1
            return collect(*args, **kwargs)

        trainer.launch, trainer.collect = counted_launch, counted_collect

    def steps(self, steps, end):
        self.events.append(("steps", steps.iteration[:end].tolist(), float(steps.counters.wall_time_s)))

    def evaluate(self, learner, counters):
        self.events.append(("evaluate", counters.iteration, self.in_flight[0]))
        self.clock.now += self.eval_seconds  # evaluation takes time: never training time

    def checkpoint(self, learner, counters):
        self.events.append(("checkpoint", counters.iteration, self.in_flight[0]))
        self.clock.now += self.eval_seconds

    def stop_signal(self):
        chunks = sum(e[0] == "steps" for e in self.events)
        return signal.SIGTERM if self.stop_after_chunks is not None and chunks >= self.stop_after_chunks else None


@pytest.fixture(scope="module")
def trainer(linear_task):
    config = resolve_config({"task": "linear", "num_particles": 4, "unroll_length": 2, "sigma": 0.01, "lr": 0.01})
    return Trainer(config, task=linear_task)


@pytest.fixture
def start(trainer):
    clock = FakeClock()
    trainer.clock = clock
    learner, counters = trainer.init()
    counters.wall_time_s = 0.0
    yield clock, learner, counters
    trainer.__dict__.pop("launch", None), trainer.__dict__.pop("collect", None)


def test_every_update_is_reported_once_with_evaluations_and_checkpoints_at_their_boundaries(trainer, start):
    clock, learner, counters = start
    calls = Recorder(trainer, clock)
    _, final = train_loop(trainer, learner, counters, Schedule(23, eval_every=5, checkpoint_every=7), calls)
    reported = [i for e in calls.events if e[0] == "steps" for i in e[1]]
    assert reported == list(range(1, 24)) and final.iteration == 23
    assert [e[1] for e in calls.events if e[0] == "evaluate"] == [0, 5, 10, 15, 20, 23]
    assert [e[1] for e in calls.events if e[0] == "checkpoint"] == [0, 7, 14, 21, 23]
    assert calls.events[:2] == [("evaluate", 0, 0), ("checkpoint", 0, 0)]  # theta_0's row before the first checkpoint


def test_no_chunk_runs_during_an_evaluation_or_checkpoint_and_their_time_is_not_training(trainer, start):
    """The chunk ending at a boundary is collected before the next one is launched, so
    nothing is in flight while evaluating or checkpointing; each takes 100 s of the fake
    clock and none of it reaches wall_time_s (chunks themselves take no fake time)."""
    clock, learner, counters = start
    calls = Recorder(trainer, clock, eval_seconds=100.0)
    _, final = train_loop(trainer, learner, counters, Schedule(40, eval_every=4, checkpoint_every=10), calls)
    boundary = [e for e in calls.events if e[0] in ("evaluate", "checkpoint")]
    assert len(boundary) > 10 and all(in_flight == 0 for _, _, in_flight in boundary), boundary
    assert final.wall_time_s == 0.0, f"{final.wall_time_s} s of evaluation or checkpoints counted as training"


def test_between_boundaries_one_chunk_stays_in_flight(trainer, start):
    clock, learner, counters = start
    calls = Recorder(trainer, clock)
    seen = []
    steps = calls.steps
    calls.steps = lambda s, end: (seen.append(calls.in_flight[0]), steps(s, end))
    train_loop(trainer, learner, counters, Schedule(12, eval_every=0, checkpoint_every=100), calls)
    assert seen[0] == 1, "the second chunk is launched before the first is reported"


def test_a_stop_signal_checkpoints_the_last_good_state_and_raises(trainer, start):
    clock, learner, counters = start
    calls = Recorder(trainer, clock, stop_after_chunks=2)
    with pytest.raises(Stopped) as stopped:
        train_loop(trainer, learner, counters, Schedule(1000, checkpoint_every=1000), calls)
    last_reported = [e for e in calls.events if e[0] == "steps"][-1][1][-1]
    assert stopped.value.signum == signal.SIGTERM and stopped.value.counters.iteration == last_reported
    assert calls.events[-1] == ("checkpoint", last_reported, 1)


def test_non_finite_windows_in_a_row_stop_the_loop_at_the_limit(linear_task):
    config = resolve_config({"task": "linear", "num_particles": 2, "unroll_length": 2, "sigma": 0.01})
    nan = Task(init_theta=lambda k: jnp.zeros(2), init_state=lambda k: jnp.zeros(1),
               step=lambda theta, s, t, k, b: s + 1.0, loss=lambda theta, s, t, b: jnp.nan * s[0], horizon=8)
    trainer = Trainer(config, task=nan)
    learner, counters = trainer.init()
    calls = Recorder(trainer, FakeClock())
    with pytest.raises(Stopped) as stopped:
        train_loop(trainer, learner, counters, Schedule(50, max_nonfinite=4, checkpoint_every=50), calls)
    assert stopped.value.streak == 4 and stopped.value.counters.iteration == 0
    assert [i for e in calls.events if e[0] == "steps" for i in e[1]] == [1, 2, 3, 4]
    assert calls.events[-1][:2] == ("checkpoint", 0)


def test_chunks_are_cut_at_the_end_and_at_every_boundary():
    pacer = Pacer(1000)
    pacer.per_update_s = 1e-6  # the pacer alone would ask for 1000
    schedule = Schedule(2500, eval_every=250, checkpoint_every=400)
    sizes, planned = [], 0
    while planned < schedule.iterations:
        sizes.append(chunk_size(pacer, schedule, planned))
        planned += sizes[-1]
    ends = np.cumsum(sizes)
    assert ends[-1] == 2500 and all(schedule.boundary(int(e)) or e == 2500 for e in ends)
    assert set(range(250, 2501, 250)) | set(range(400, 2500, 400)) <= set(ends.tolist())
