"""The fair order among waiting jobs."""

from __future__ import annotations

import pytest

from retouch.server.scheduling import FairQueue


def drain(queue: FairQueue[str]) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


def test_a_late_single_job_starts_next_however_long_the_burst_before_it() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(50):
        queue.push(f"a{index}", tenant="a", subject="s")
    for index in range(10):
        assert queue.pop() == f"a{index}"
    queue.push("b0", tenant="b", subject="s")
    assert drain(queue)[:2] == ["b0", "a10"]


def test_one_job_at_a_time_beside_a_burst_always_starts_next() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(50):
        queue.push(f"a{index}", tenant="a", subject="s")
    for index in range(5):
        queue.pop()  # a slot frees while b has nothing waiting
        queue.push(f"b{index}", tenant="b", subject="s")
        assert queue.pop() == f"b{index}"


def test_an_idle_tenant_banks_no_credit() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("b0", tenant="b", subject="s")
    assert queue.pop() == "b0"
    for index in range(20):
        queue.push(f"a{index}", tenant="a", subject="s")
    for _ in range(10):
        queue.pop()
    for index in range(3):
        queue.push(f"b{index + 1}", tenant="b", subject="s")
    # b was idle while a ran ten jobs; it comes back to an even share, not ten turns.
    assert drain(queue)[:6] == ["b1", "a10", "b2", "a11", "b3", "a12"]


def test_weights_share_turns_in_proportion() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(6):
        queue.push(f"gold{index}", tenant="gold", subject="s", weight=2)
        queue.push(f"free{index}", tenant="free", subject="s", weight=1)
    first_six = drain(queue)[:6]
    assert sorted(first_six) == ["free0", "free1", "gold0", "gold1", "gold2", "gold3"]


def test_subjects_within_a_tenant_take_turns() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(3):
        queue.push(f"x{index}", tenant="t", subject="x")
    queue.push("y0", tenant="t", subject="y")
    assert drain(queue) == ["x0", "y0", "x1", "x2"]


def test_order_predicts_pops_and_remove_takes_one_out() -> None:
    queue: FairQueue[str] = FairQueue()
    items = {f"{tenant}{index}": f"{tenant}{index}" for tenant in "abc" for index in range(3)}
    for name, item in items.items():
        queue.push(item, tenant=name[0], subject="s", weight=0.5)
    assert queue.remove(items["b1"])
    assert not queue.remove(items["b1"])
    predicted = list(queue.order())
    assert len(predicted) == 8
    assert drain(queue) == predicted


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FairQueue[str]().push("x", tenant="t", subject="s", weight=0)
