"""The ``retouch`` command: edit images, follow jobs and check usage from a shell.

    retouch inpaint photo.png --mask mask.png --out fixed.png
    retouch enhance fixed.png --upscale 2
    retouch --json jobs --state running
    retouch watch job_01… --after-seq 3

Progress goes to stderr (a bar on a terminal, plain lines otherwise); stdout carries
the saved path, a table, or with ``--json`` one JSON object per line. ``main(argv)``
returns the exit code instead of exiting, so tests run it in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._arguments import EXTENSIONS, build_parser
from ._batch import run_batch
from ._client import EDIT_TIMEOUT, UNARY_TIMEOUT, AsyncClient
from ._errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RetouchError,
    Unauthenticated,
    Unavailable,
)
from ._events import Event, Progress
from ._inputs import ImageRef, ImageSource
from ._jobs import Job
from ._results import Result
from ._retry import RetryPolicy
from ._terminal import ProgressDisplay, event_json, json_line, jsonable, table
from ._tls import TLS

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_SERVER = 4
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """A local problem with the command line: a missing file or directory."""


def exit_code(error: RetouchError) -> int:
    """The exit code for a failed call."""
    if isinstance(error, InvalidArgument):
        return EXIT_BAD_INPUT
    if isinstance(error, Unauthenticated | PermissionDenied | ResourceExhausted | NotFound):
        return EXIT_REFUSED
    return EXIT_SERVER


@dataclass
class Console:
    """Where the command writes: results to ``stdout``, progress and errors to ``stderr``;
    with ``json``, everything a script needs goes to ``stdout`` as JSON lines."""

    json: bool
    stdout: IO[str]
    stderr: IO[str]
    display: ProgressDisplay = field(init=False)

    def __post_init__(self) -> None:
        self.display = ProgressDisplay(self.stderr)

    def event(self, event: Event) -> None:
        """A job's event: a JSON line, or the progress display."""
        if self.json:
            json_line(event_json(event), self.stdout)
        else:
            self.display.show(event)

    def result(self, value: Any, text: str) -> None:
        """A command's outcome: ``value`` as JSON, or ``text`` as it is."""
        if self.json:
            json_line(value, self.stdout)
        else:
            self.stdout.write(text)
            self.stdout.flush()

    def write_bytes(self, data: bytes) -> None:
        """Raw bytes to stdout (``--out -``)."""
        binary = self.stdout.buffer if hasattr(self.stdout, "buffer") else sys.stdout.buffer
        binary.write(data)
        binary.flush()

    def note(self, text: str) -> None:
        """A remark for a person (not shown with ``--json``)."""
        if not self.json:
            self.display.message(text)

    def error(self, message: str, details: Sequence[str] = (), value: Any = None) -> None:
        """A failure: ``message`` and ``details`` lines on stderr, or ``value`` as the JSON
        line ``{"error": value}`` on stdout."""
        self.display.end()
        if self.json:
            json_line({"error": value if value is not None else {"message": message}}, self.stdout)
            return
        self.stderr.write(f"retouch: {message}\n" + "".join(f"  {d}\n" for d in details))
        self.stderr.flush()


# -- running ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``retouch`` command line and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else EXIT_BAD_INPUT
    console = Console(json=args.json, stdout=sys.stdout, stderr=sys.stderr)
    try:
        return asyncio.run(run(args, console))
    except KeyboardInterrupt:
        console.error("interrupted", value={"code": "CANCELLED", "message": "interrupted"})
        return EXIT_INTERRUPTED


async def run(args: argparse.Namespace, console: Console) -> int:
    """Run the parsed command; failures become messages and exit codes."""
    try:
        async with AsyncClient(
            args.server,
            api_key=args.key,
            subject=args.subject,
            tls=tls_options(args),
            timeout_s=args.timeout or UNARY_TIMEOUT,
            edit_timeout_s=args.timeout or EDIT_TIMEOUT,
            retry=RetryPolicy(max_attempts=args.retries + 1),
        ) as client:
            return await COMMANDS[args.command](client, args, console)
    except RetouchError as error:
        message = _which_input(error, args) + str(error)
        console.error(message, _error_lines(error, args.server), _error_json(error))
        return exit_code(error)
    except (InputError, ValueError) as error:
        console.error(str(error), value={"code": "INVALID_ARGUMENT", "message": str(error)})
        return EXIT_BAD_INPUT
    except OSError as error:
        message = f"{error.filename}: {error.strerror}" if error.filename else str(error)
        console.error(message, value={"code": "INVALID_ARGUMENT", "message": message})
        return EXIT_BAD_INPUT


def _which_input(error: RetouchError, args: argparse.Namespace) -> str:
    """``"the mask (hole.png): "`` when the server refused that input, else ``""``."""
    if not isinstance(error, InvalidArgument):
        return ""
    for violation in error.field_violations:
        root = violation.field.split(".", 1)[0]
        given = getattr(args, root, None) if root in ("image", "mask") else None
        if given:
            return f"the {root} ({given}): "
    return ""


def tls_options(args: argparse.Namespace) -> TLS | None:
    """The TLS the command line asks for, or ``None`` for plaintext."""
    if not (args.tls or args.ca_file or args.cert_file or args.key_file or args.server_name):
        return None
    if (args.cert_file is None) != (args.key_file is None):
        raise InputError("--cert-file and --key-file go together (mutual TLS)")
    return TLS(
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        server_name=args.server_name,
    )


def _error_lines(error: RetouchError, server: str) -> list[str]:
    lines = []
    if error.field_violations and [v.description for v in error.field_violations] != [
        error.message
    ]:
        lines += [f"{v.field}: {v.description}" for v in error.field_violations]
    lines += [f"{v.subject}: {v.description}" for v in error.quota_violations]
    if error.reason:
        lines.append(f"reason: {error.reason}")
    if error.retry_after is not None:
        lines.append(f"retry after {error.retry_after:g} s")
    if isinstance(error, Unavailable) and not error.details:
        lines.append(f"is retouch-server running at {server}? (--server or $RETOUCH_SERVER)")
    return lines


def _error_json(error: RetouchError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "message": error.message,
        "reason": error.reason,
        "metadata": error.metadata,
        "field_violations": jsonable(error.field_violations),
        "quota_violations": jsonable(error.quota_violations),
        "retry_after": error.retry_after,
        "exit_code": exit_code(error),
    }


# -- commands ---------------------------------------------------------------------


Command = Callable[[AsyncClient, argparse.Namespace, Console], Awaitable[int]]


def image_source(text: str) -> ImageSource:
    """``result:<id>`` or ``upload:<id>`` as a reference, anything else as a file that
    must exist."""
    scheme, _, rest = text.partition(":")
    if scheme == "result" and rest:
        return ImageRef(result_id=rest)
    if scheme == "upload" and rest:
        return ImageRef(upload_id=rest)
    path = Path(text)
    if not path.is_file():
        raise InputError(f"{text}: no such file")
    return path


def output_target(args: argparse.Namespace, default_name: str | None) -> Path | None:
    """Where to save: ``None`` for stdout; a missing directory is refused before any
    work is done, so a job is never run (and charged) for a result that cannot be saved."""
    out: str | None = args.out
    if out == "-":
        if args.json:
            raise InputError("--out - writes the image to stdout, which --json needs")
        return None
    if out is None:
        if default_name is None:
            return None
        _refuse_overwrite(Path(default_name), args)
        return Path(default_name)
    path = Path(out)
    if not path.is_dir() and not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    _refuse_overwrite(path, args)
    return path


def _refuse_overwrite(path: Path, args: argparse.Namespace) -> None:
    # Checked before the job runs, so a refusal costs nothing.
    if path.is_file() and not args.force:
        raise InputError(f"{path} exists; pass --force to overwrite it")


def _default_name(args: argparse.Namespace) -> str:
    text: str = args.image
    scheme, _, rest = text.partition(":")
    stem = rest if scheme in ("result", "upload") and rest else Path(text).stem
    return f"{stem}.{args.command}{EXTENSIONS[args.format or 'png']}"


def _edit_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "format": args.format,
        "quality": args.quality,
        "provider": args.provider,
        "model": args.model,
        "prefer": args.prefer,
        "request_id": args.request_id,
        "previews": args.preview_out is not None,
    }


def _generation(args: argparse.Namespace) -> dict[str, Any]:
    return {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed}


async def inpaint(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    image = image_source(args.image)
    mask = image_source(args.mask) if args.mask else None
    target = output_target(args, _default_name(args))
    job = client.inpaint(
        image,
        mask=mask,
        invert=args.invert,
        grow=args.grow,
        feather=args.feather,
        **_generation(args),
        **_edit_options(args),
    )
    await _save(await _follow(client, job, console, preview_out=args.preview_out), target, console)
    return EXIT_OK


async def outpaint(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    image = image_source(args.image)
    target = output_target(args, _default_name(args))
    job = client.outpaint(
        image,
        left=args.left,
        right=args.right,
        top=args.top,
        bottom=args.bottom,
        feather=args.feather,
        **_generation(args),
        **_edit_options(args),
    )
    await _save(await _follow(client, job, console, preview_out=args.preview_out), target, console)
    return EXIT_OK


async def enhance(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    image = image_source(args.image)
    target = output_target(args, _default_name(args))
    job = client.enhance(
        image,
        upscale=args.upscale,
        denoise=args.denoise,
        sharpen=args.sharpen,
        strength=args.strength,
        **_edit_options(args),
    )
    await _save(await _follow(client, job, console, preview_out=args.preview_out), target, console)
    return EXIT_OK


async def watch(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    target = output_target(args, None)
    job = client.watch(args.job_id, after_seq=args.after_seq)
    result = await _follow(client, job, console, cancel=False)
    if args.out is not None:
        await _save(result, target, console)
    elif not console.json:
        console.result(None, f"{result.result_id}\n")
    return EXIT_OK


async def _follow(
    client: AsyncClient,
    job: Job,
    console: Console,
    *,
    cancel: bool = True,
    preview_out: str | None = None,
) -> Result:
    """Show the job's events as they come and return its result. On Ctrl-C, cancel the
    job when ``cancel``, else leave it running. With ``preview_out``, the last preview
    received is saved there when the stream ends, however it ends."""
    preview = b""
    try:
        async for event in job:
            if isinstance(event, Progress) and event.preview:
                preview = event.preview
            console.event(event)
    except asyncio.CancelledError:
        if job.job_id is None:
            raise
        if cancel:
            # A job outlives the call that started it: ending the stream leaves it
            # running, so Ctrl-C cancels it explicitly.
            with contextlib.suppress(RetouchError, TimeoutError):
                async with asyncio.timeout(3):
                    await client.cancel_job(job.job_id)
            console.note(f"cancelled job {job.job_id}")
        else:
            console.note(f"stopped watching job {job.job_id}; it goes on")
        raise
    finally:
        if preview_out is not None and preview:
            await asyncio.to_thread(Path(preview_out).write_bytes, preview)
    return await job


async def _save(result: Result, target: Path | None, console: Console) -> None:
    if target is None:
        console.write_bytes(await result.read())
        return
    path = await result.save(target)
    console.result(
        {
            "type": "saved",
            "path": str(path),
            "result_id": result.result_id,
            "size_bytes": path.stat().st_size,
        },
        f"{path}\n",
    )


async def jobs(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    found = await client.list_jobs(state=args.state, limit=args.limit)
    rows = [
        (
            j.job_id,
            j.state,
            j.operation,
            f"{j.provider}/{j.model}" if j.provider else "",
            j.created_at,
            j.result_id or (f"{j.error_code}: {j.error_message}" if j.error_code else ""),
        )
        for j in found
    ]
    text = table(["JOB", "STATE", "OPERATION", "PROVIDER", "CREATED", "RESULT"], rows)
    console.result({"jobs": found}, text if found else "no jobs\n")
    return EXIT_OK


async def cancel(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    job = await client.cancel_job(args.job_id)
    console.result(job, f"{job.job_id} {job.state}\n")
    return EXIT_OK


async def download(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    target = output_target(args, None)
    if target is None:
        async for chunk in client.download(args.result_id):
            console.write_bytes(chunk)
        return EXIT_OK
    path = await client.download_to(args.result_id, target)
    console.result(
        {
            "type": "saved",
            "path": str(path),
            "result_id": args.result_id,
            "size_bytes": path.stat().st_size,
        },
        f"{path}\n",
    )
    return EXIT_OK


async def usage(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    found = await client.get_usage()
    quota = (
        "unlimited"
        if found.quota_limit is None
        else f"{found.quota_used} of {found.quota_limit} used, {found.quota_left} left"
    )
    resets = f", resets {found.quota_resets_at:%Y-%m-%d %H:%MZ}" if found.quota_resets_at else ""
    lines = [
        f"subject  {found.subject}",
        f"plan     {found.plan}",
        f"quota    {quota}{resets}",
        f"credits  {found.credits_balance} available, {found.credits_reserved} reserved",
        *(
            f"rate     {b.name}: {b.tokens:.0f} of {b.capacity:.0f} requests left, "
            f"+{b.refill_per_second:g}/s"
            for b in found.buckets
        ),
    ]
    console.result(found, "\n".join(lines) + "\n")
    return EXIT_OK


async def providers(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    found = await client.providers(operation=args.operation)
    rows = [
        (
            p.name,
            p.health,
            ",".join(p.operations),
            ",".join(p.models),
            f"{p.cost.credits_per_job}/job + {p.cost.credits_per_megapixel}/MP",
            "remote" if p.remote else "local",
        )
        for p in found
    ]
    text = table(["NAME", "HEALTH", "OPERATIONS", "MODELS", "COST", "WHERE"], rows)
    console.result({"providers": found}, text)
    return EXIT_OK


async def batch(client: AsyncClient, args: argparse.Namespace, console: Console) -> int:
    return await run_batch(client, args, console.stdout, console.stderr, exit_code)


COMMANDS: dict[str, Command] = {
    "batch": batch,
    "inpaint": inpaint,
    "outpaint": outpaint,
    "enhance": enhance,
    "jobs": jobs,
    "watch": watch,
    "cancel": cancel,
    "download": download,
    "usage": usage,
    "providers": providers,
}


if __name__ == "__main__":
    sys.exit(main())
