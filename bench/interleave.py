"""Measurements taken in turns, so that load drifting during a run weighs on each alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


async def pairs(
    n: int, first: Callable[[], Awaitable[A]], second: Callable[[], Awaitable[B]]
) -> tuple[list[A], list[B]]:
    """``n`` calls of each, side by side; which goes first alternates, so neither always
    runs on a just-warmed cache."""
    firsts: list[A] = []
    seconds: list[B] = []
    for i in range(n):
        if i % 2:
            seconds.append(await second())
            firsts.append(await first())
        else:
            firsts.append(await first())
            seconds.append(await second())
    return firsts, seconds


def turns(rounds: int, a: T, b: T) -> Iterator[T]:
    """``a b``, ``b a``, ``a b``…: each side's turns, ``rounds`` of each, in an order
    that puts each as often first as second, so a drift in load cancels out."""
    for i in range(rounds):
        yield from (b, a) if i % 2 else (a, b)
