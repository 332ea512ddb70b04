"""Server CPU is read for the whole process tree from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.server_cpu import cpu_seconds

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(proc: Path, pid: int, comm: str, ppid: int, times: tuple[int, int, int, int]) -> None:
    # proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
    # majflt cmajflt utime stime cutime cstime ...
    (proc / str(pid)).mkdir()
    fields = ["S", ppid, 0, 0, 0, 0, 0, 0, 0, 0, 0, *times, 20, 0]
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(map(str, fields))}\n")


def test_cpu_counts_the_process_its_descendants_and_what_they_reaped(tmp_path: Path) -> None:
    _stat(tmp_path, 10, "python", 1, (100, 50, 5, 5))
    _stat(tmp_path, 11, "worker (one) x", 10, (20, 10, 0, 0))
    _stat(tmp_path, 12, "grandchild", 11, (3, 1, 0, 0))
    _stat(tmp_path, 13, "unrelated", 1, (1000, 1000, 0, 0))
    assert cpu_seconds(10, tmp_path) == pytest.approx((160 + 30 + 4) / TICKS)


def test_cpu_of_a_process_that_is_gone_is_an_error(tmp_path: Path) -> None:
    _stat(tmp_path, 13, "unrelated", 1, (1, 1, 0, 0))
    with pytest.raises(RuntimeError, match="not running"):
        cpu_seconds(10, tmp_path)
