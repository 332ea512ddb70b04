"""Servers from earlier revisions, measured in the same run as the working tree.

The machine is shared and noisy, so a figure is compared with a baseline measured in
the same run, never with an older RESULTS.md. :func:`checkout` extracts a revision's
server, plugins and generated stubs (``git archive``) into a temporary directory and
gives a :class:`~bench.processes.Source` that :func:`bench.processes.retouch_server`
runs with this venv: the old ``src`` directories come first on ``PYTHONPATH``, ahead of
the working tree's that the venv's editable installs add, so every ``retouch.*``
package the revision had is imported from it. Plugins the venv registers that the
revision did not have are disabled in its config.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from retouch.sdk import ENTRY_POINT_GROUP
from retouch.v1 import image_edit_pb2_grpc

from . import client
from .processes import ROOT, Source, retouch_server

BEFORE_SHARED_ENGINES = "8762f3bbe358203d4efdc082c055ac62d95df153"
"""main before issue 8 (replicas on shared engines): the embedded SQLite server whose
figures issue 8 must keep within 5 %."""
BEFORE_PIXEL_PATH = "ca51b7c5125c3edacff4b28e211935f65fad721f"
"""main before the pixel-path and scheduling changes that issue 10's server CPU per job
(15 % less) is measured against."""

ARCHIVED = ("server/src", "plugins", "clients/python/src")
"""What a baseline server imports: the server, every plugin, and the stubs of its protos."""


class RevisionMissing(RuntimeError):
    """The clone does not have a revision the bench compares with."""


def commit_of(revision: str) -> str:
    """The full id of ``revision``; :class:`RevisionMissing` when the clone lacks it."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise RevisionMissing(
            f"the bench compares with revision {revision}, which the git repository at "
            f"{ROOT} does not have: run it in a clone with the full history "
            "(git fetch --unshallow), or update the revision in bench/baseline.py"
        )
    return found.stdout.strip()


def working_tree() -> Source:
    """The working tree's code, labelled ``HEAD <short id>``, with ``+ changes`` when
    the server's, the plugins' or the stubs' tracked files differ from it."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", *ARCHIVED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Source(f"HEAD {short or '(no git)'}{' + changes' if dirty else ''}", ROOT)


@contextmanager
def checkout(revision: str, what: str) -> Iterator[Source]:
    """The code of ``revision`` (``what`` it is, for the report) in a temporary
    directory, as a :class:`Source` to run a server from."""
    commit = commit_of(revision)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, *ARCHIVED],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    with tempfile.TemporaryDirectory(prefix=f"retouch-{commit[:7]}-") as tmp:
        root = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
        src_dirs = tuple(
            path
            for path in (
                root / "server/src",
                *sorted((root / "plugins").glob("*/src")),
                root / "clients/python/src",
            )
            if path.is_dir()
        )
        yield Source(
            label=f"{commit[:7]} ({what})",
            root=root,
            src_dirs=src_dirs,
            disabled_providers=_registered_elsewhere(src_dirs),
        )


def _registered_elsewhere(src_dirs: tuple[Path, ...]) -> tuple[str, ...]:
    """Entry points of the venv's plugins whose module is in none of ``src_dirs``."""

    def present(module: str) -> bool:
        relative = Path(*module.split("."))
        return any(
            (src / relative).is_dir() or (src / relative).with_suffix(".py").is_file()
            for src in src_dirs
        )

    return tuple(
        sorted(
            entry.name
            for entry in entry_points(group=ENTRY_POINT_GROUP)
            if not present(entry.module)
        )
    )


@dataclass(frozen=True, slots=True)
class Served:
    """A running bench server and the code it runs."""

    source: Source
    port: int
    pid: int


@contextmanager
def before_and_now(revision: str, what: str) -> Iterator[tuple[Served, Served]]:
    """Two servers on the embedded defaults, each with its own state: one running
    ``revision`` (``what`` it is), one the working tree."""
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="retouch-ab-")))
        sources = (stack.enter_context(checkout(revision, what)), working_tree())
        served = []
        for name, source in zip(("before", "now"), sources, strict=True):
            pids: list[int] = []
            port = stack.enter_context(retouch_server(data / name, pids=pids, source=source))
            served.append(Served(source, port, pids[0]))
        yield served[0], served[1]


@asynccontextmanager
async def stubs(
    before: Served, now: Served
) -> AsyncIterator[tuple[image_edit_pb2_grpc.ImageEditAsyncStub, ...]]:
    """An ImageEdit stub for each server, on a channel of its own."""
    async with AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(client.channel(served.port)) for served in (before, now)
        ]
        yield tuple(image_edit_pb2_grpc.ImageEditStub(channel) for channel in channels)


def describe(before: str, now: str) -> str:
    """The sentence of RESULTS.md that says how the servers labelled ``before`` and
    ``now`` were run."""
    return (
        f"Two servers on the embedded defaults at once, `{before}` and `{now}` "
        "(the working tree); the baseline's code is extracted with `git archive` and run "
        "with this venv, and where each server imported its modules from is checked "
        "(`bench/baseline.py`)."
    )
