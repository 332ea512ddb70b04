"""Latency summaries and the targets figures are held to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency samples in milliseconds, reduced to what the report shows."""

    n: int
    p50: float
    p90: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Summary:
        """Summarise ``samples_ms``; percentiles interpolate linearly, like numpy's."""
        if not samples_ms:
            raise ValueError("cannot summarise zero samples")
        values = np.asarray(samples_ms, dtype=np.float64)
        p50, p90 = np.percentile(values, [50, 90])
        return cls(
            n=len(values),
            p50=float(p50),
            p90=float(p90),
            mean=float(values.mean()),
            min=float(values.min()),
            max=float(values.max()),
        )

    def text(self) -> str:
        """``p50 / p90 / mean`` in ms, for tables."""
        return f"{self.p50:.1f} / {self.p90:.1f} / {self.mean:.1f}"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure and the target it must meet."""

    name: str
    value: float
    unit: str
    limit: float
    at_least: bool = False
    """True when the figure must reach ``limit`` (throughput), not stay under it."""
    detail: str = ""
    decimals: int = 1

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"

    @property
    def target(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g} {self.unit}"

    @property
    def measured(self) -> str:
        return f"{self.value:.{self.decimals}f} {self.unit}"


@dataclass(frozen=True, slots=True)
class Change:
    """One figure measured on a baseline and on the working tree in the same run, and
    how much worse (a negative ``max_worse``: how much better) the working tree may be."""

    name: str
    before: float
    after: float
    unit: str
    max_worse: float
    """A fraction of ``before``: 0.05 allows 5 % worse, -0.15 asks for 15 % better."""
    higher_is_better: bool = False
    decimals: int = 1

    @property
    def change(self) -> float:
        """``after`` relative to ``before``: +0.1 is 10 % more."""
        return self.after / self.before - 1

    @property
    def worse(self) -> float:
        """How much worse ``after`` is, as a fraction of ``before``; negative when better."""
        return -self.change if self.higher_is_better else self.change

    @property
    def passed(self) -> bool:
        return self.worse <= self.max_worse

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"

    @property
    def target(self) -> str:
        more, less = ("higher", "lower") if self.higher_is_better else ("more", "less")
        if self.max_worse >= 0:
            return f"at most {self.max_worse:.0%} {less if self.higher_is_better else more}"
        return f"at least {-self.max_worse:.0%} {more if self.higher_is_better else less}"

    def row(self) -> str:
        """A Markdown table row: figure, before, after, change, target, verdict."""
        return (
            f"| {self.name} | {self.before:.{self.decimals}f} {self.unit} "
            f"| {self.after:.{self.decimals}f} {self.unit} | {self.change:+.1%} "
            f"| {self.target} | **{self.verdict}** |"
        )
