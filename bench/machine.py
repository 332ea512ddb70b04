"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import cv2


@dataclass(frozen=True, slots=True)
class Machine:
    """The machine and software versions of one bench run."""

    date: str
    cpus: int
    cpu_model: str
    load_average: str
    python: str
    opencv: str
    grpcio: str
    numpy: str

    def lines(self) -> list[str]:
        return [
            f"- date: {self.date}",
            f"- machine: {self.cpus} CPU(s) usable (nproc), {self.cpu_model}; "
            f"load average before the run {self.load_average}",
            f"- python {self.python}, opencv {self.opencv}, grpcio {self.grpcio}, "
            f"numpy {self.numpy}",
        ]


def describe_machine() -> Machine:
    """Read the machine's description now."""
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        load_average=" / ".join(f"{load:.2f}" for load in os.getloadavg()),
        python=platform.python_version(),
        opencv=str(cv2.__version__),
        grpcio=metadata.version("grpcio"),
        numpy=metadata.version("numpy"),
    )


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown CPU"
