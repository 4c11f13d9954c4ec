"""How an epoch's batches are grouped into calls of a compiled program that runs several steps
(services/common/schedule.py `executions`, the tuned JAX loop's plan): pure logic, no framework."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.common import schedule


def test_an_epoch_not_a_multiple_of_the_calls_ends_in_a_shorter_call_and_the_short_batch_alone():
    # 1300 samples of batch 32: 40 full batches and one of 20.
    assert schedule.executions(1300, 32, 32) == [(0, 32), (32, 8), (40, 1)]
    assert schedule.executions(1280, 32, 32) == [(0, 32), (32, 8)]
    assert schedule.executions(20, 32, 32) == [(0, 1)]


def test_one_step_per_call_is_every_batch_on_its_own():
    assert schedule.executions(100, 32, 1) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert schedule.steps_per_execution("default") == 1
    assert schedule.steps_per_execution("tuned") == schedule.TUNED_STEPS_PER_EXECUTION


@given(
    train_samples=st.integers(1, 5000),
    batch_size=st.integers(2, 300),
    steps=st.integers(1, 64),
)
def test_every_batch_is_in_exactly_one_call_in_order_and_a_calls_batches_have_one_size(
    train_samples, batch_size, steps
):
    calls = schedule.executions(train_samples, batch_size, steps)
    batches = [first + i for first, count in calls for i in range(count)]
    assert batches == list(range(schedule.steps_per_epoch(train_samples, batch_size)))
    for first, count in calls:
        assert 1 <= count <= steps
        sizes = {
            min(batch_size, train_samples - k * batch_size) for k in range(first, first + count)
        }
        assert len(sizes) == 1
