"""The per-step profile runs the code it names and sums what it measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.baseline import working_tree
from bench.pixel_steps import STEPS, render, samples_of
from bench.processes import Source


def test_each_step_of_the_working_tree_is_measured() -> None:
    [sample] = samples_of(working_tree(), runs=1, side=64)
    assert set(sample) == {*STEPS, "hosted"}
    for figures in sample.values():
        assert figures["wall"] > 0
        assert figures["cpu"] >= 0
        assert figures["peak_mb"] > 0


def test_steps_that_ran_other_code_than_the_source_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ran code from elsewhere"):
        samples_of(Source("elsewhere", tmp_path), runs=1, side=64)


def test_the_total_adds_up_the_steps_and_leaves_the_hosted_answer_out() -> None:
    step = {"cpu": 1.0, "wall": 2.0, "peak_mb": 3.0}
    sample = {name: dict(step) for name in STEPS} | {"hosted": {**step, "cpu": 50.0}}
    table = render({"before": [sample], "now": [sample]})
    assert "| total | 5.00 / 10.00, 3.00 MB | 5.00 / 10.00, 3.00 MB |" in table
    assert "| hosted | 50.00 / 2.00, 3.00 MB |" in table
