"""The ``retouch`` command line's arguments, help text and documented exit codes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from importlib import metadata
from typing import Any

from ._client import DEFAULT_TARGET, EDIT_TIMEOUT, UNARY_TIMEOUT
from ._models import JobState, Operation

DEV_API_KEY = "retouch-dev-key"
"""The development key a local ``retouch-server`` accepts (``production`` refuses it)."""

EPILOG = f"""\
environment:
  RETOUCH_SERVER    server address (default {DEFAULT_TARGET})
  RETOUCH_TLS, RETOUCH_CA_FILE, RETOUCH_SERVER_NAME, RETOUCH_CERT_FILE, RETOUCH_KEY_FILE
                    TLS options (see --tls, --ca-file, --server-name, --cert-file, --key-file)
  RETOUCH_API_KEY   API key (default: the development key {DEV_API_KEY})
  RETOUCH_SUBJECT   the end user to act for: user:<id> or guest:<id>

images:
  IMAGE is a file (PNG, JPEG or WebP), or an image already on the server:
  result:<result_id> chains on an earlier result, upload:<upload_id> uses an upload.

exit codes:
  0    success
  2    bad input: INVALID_ARGUMENT, a missing or unreadable file, bad usage
  3    refused: UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, NOT_FOUND
  4    server trouble: UNAVAILABLE or unreachable, INTERNAL, DEADLINE_EXCEEDED,
       or the job was cancelled by someone else
  130  interrupted (Ctrl-C): the running job is cancelled
"""

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def client_version() -> str:
    """The installed retouch-client version."""
    try:
        return metadata.version("retouch-client")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``retouch`` argument parser; defaults come from the environment."""
    parser = argparse.ArgumentParser(
        prog="retouch",
        description="Edit images with the retouch service: inpaint, outpaint, enhance.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"retouch {client_version()}")
    _global_options(parser, suppress=False)
    shared = argparse.ArgumentParser(add_help=False)
    _global_options(shared, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[shared, *parents],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-o",
        "--out",
        metavar="PATH",
        help="where to save the result: a file, a directory, or - for stdout "
        "(default: IMAGE's name with the command added, in the current directory)",
    )
    output.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="overwrite the output file if it exists (default: refuse, before any work)",
    )
    output.add_argument("--format", choices=sorted(EXTENSIONS), help="result format (default png)")
    output.add_argument(
        "--quality",
        type=_int_range(1, 100),
        default=0,
        metavar="1..100",
        help="JPEG/WebP quality (default: the server's, 90)",
    )
    output.add_argument(
        "--provider", default="", help="provider to use (default: the server routes)"
    )
    output.add_argument("--model", default="", help="model of that provider (default: its first)")
    output.add_argument(
        "--prefer",
        choices=["cost", "speed", "quality"],
        help="how the server ranks providers when none is named",
    )
    output.add_argument(
        "--request-id",
        metavar="ID",
        help="idempotency key: a rerun with the same ID returns the same job and is never "
        "charged twice (default: a new uuid)",
    )
    output.add_argument(
        "--preview-out",
        metavar="PATH",
        help="ask for previews while the job runs and save the last one received here (JPEG)",
    )
    generation = argparse.ArgumentParser(add_help=False)
    generation.add_argument("--prompt", default="", help="what to paint, for generative providers")
    generation.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to avoid")
    generation.add_argument(
        "--seed",
        type=_int_range(0, 2**64 - 1),
        help="random seed (default: the server picks and reports one)",
    )

    inpaint = command("inpaint", "replace the masked region of an image", output, generation)
    inpaint.add_argument("image", metavar="IMAGE")
    inpaint.add_argument(
        "--mask",
        metavar="MASK",
        help="white = replace, black = keep, same size as IMAGE "
        "(default: IMAGE's transparent pixels)",
    )
    inpaint.add_argument(
        "--invert", action="store_true", help="replace the black part of the mask instead"
    )
    inpaint.add_argument(
        "--grow",
        type=_int_range(0, 256),
        default=0,
        metavar="PX",
        help="widen the region to replace",
    )
    inpaint.add_argument(
        "--feather",
        type=_int_range(0, 256),
        default=0,
        metavar="PX",
        help="blend the edit's edge over PX pixels",
    )

    outpaint = command("outpaint", "extend the canvas and fill the new area", output, generation)
    outpaint.add_argument("image", metavar="IMAGE")
    for side in ("left", "right", "top", "bottom"):
        outpaint.add_argument(
            f"--{side}",
            type=_int_range(0, 1 << 16),
            default=0,
            metavar="PX",
            help=f"pixels to add on the {side}",
        )
    outpaint.add_argument(
        "--feather",
        type=_int_range(0, 256),
        default=0,
        metavar="PX",
        help="blend the fill into the original over PX pixels",
    )

    enhance = command("enhance", "upscale, denoise or sharpen an image", output)
    enhance.add_argument("image", metavar="IMAGE")
    kind = enhance.add_mutually_exclusive_group(required=True)
    kind.add_argument("--upscale", type=int, choices=[2, 4], help="enlarge 2x or 4x")
    kind.add_argument("--denoise", action="store_true", help="remove noise")
    kind.add_argument("--sharpen", action="store_true", help="sharpen detail")
    enhance.add_argument(
        "--strength", type=_fraction, help="denoise/sharpen strength 0..1 (default 0.5)"
    )

    jobs = command("jobs", "list your jobs, newest first")
    jobs.add_argument(
        "--state", choices=[s.value for s in JobState], help="only jobs in this state"
    )
    jobs.add_argument(
        "--limit",
        type=_int_range(1, 10_000),
        default=20,
        metavar="N",
        help="at most N jobs (default 20)",
    )

    watch = command(
        "watch", "follow a job's events until it ends; Ctrl-C stops watching, not the job"
    )
    watch.add_argument("job_id", metavar="JOB_ID")
    watch.add_argument(
        "--after-seq",
        type=_int_range(0, 2**63),
        default=0,
        metavar="SEQ",
        help="replay only events after SEQ",
    )
    watch.add_argument(
        "-o", "--out", metavar="PATH", help="also save the result here when the job succeeds"
    )
    watch.add_argument("-f", "--force", action="store_true", help="overwrite --out if it exists")

    cancel = command("cancel", "cancel a queued or running job")
    cancel.add_argument("job_id", metavar="JOB_ID")

    download = command("download", "save a result")
    download.add_argument("result_id", metavar="RESULT_ID")
    download.add_argument(
        "-o",
        "--out",
        metavar="PATH",
        default=".",
        help="a file, a directory (default: here, as RESULT_ID.ext), or - for stdout",
    )
    download.add_argument("-f", "--force", action="store_true", help="overwrite --out if it exists")

    batch = command(
        "batch", "inpaint every image of a folder, N jobs at once, masks matched by name"
    )
    batch.add_argument("folder", metavar="FOLDER", help="the images (PNG, JPEG, WebP)")
    batch.add_argument(
        "--masks", metavar="FOLDER", help="masks with the images' names (default: alpha)"
    )
    batch.add_argument(
        "-o", "--out", metavar="FOLDER", required=True, help="where results go, as NAME.inpaint.png"
    )
    batch.add_argument(
        "-j", "--jobs", type=_int_range(1, 64), default=4, metavar="N", help="jobs at once (4)"
    )
    batch.add_argument("-f", "--force", action="store_true", help="overwrite existing results")
    command("usage", "your plan, quota, credits and rate limits")
    providers = command("providers", "the providers the server offers, with cost and health")
    providers.add_argument(
        "--operation", choices=[o.value for o in Operation], help="only providers that can do this"
    )
    return parser


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Subcommands accept the global options too, so `retouch jobs --json` works; there
    # they default to "not given" and leave the top-level values alone.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default(os.environ.get("RETOUCH_SERVER") or DEFAULT_TARGET),
        help="server address (default: $RETOUCH_SERVER or %(default)s)"
        if not suppress
        else "server address",
    )
    parser.add_argument(
        "--key",
        metavar="API_KEY",
        default=default(os.environ.get("RETOUCH_API_KEY") or DEV_API_KEY),
        help="API key (default: $RETOUCH_API_KEY or the development key)",
    )
    parser.add_argument(
        "--subject",
        metavar="user:ID",
        default=default(os.environ.get("RETOUCH_SUBJECT") or None),
        help="act for this end user (default: $RETOUCH_SUBJECT, or the key's tenant itself)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=default(_flag(os.environ.get("RETOUCH_TLS"))),
        help="connect over TLS, trusting the system's CAs ($RETOUCH_TLS=1); implied by "
        "--ca-file and --cert-file",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        default=default(os.environ.get("RETOUCH_CA_FILE") or None),
        help="CA bundle to check the server's certificate with ($RETOUCH_CA_FILE)",
    )
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        default=default(os.environ.get("RETOUCH_SERVER_NAME") or None),
        help="the name the server's certificate must carry, when it differs from the "
        "address ($RETOUCH_SERVER_NAME)",
    )
    parser.add_argument(
        "--cert-file",
        metavar="PEM",
        default=default(os.environ.get("RETOUCH_CERT_FILE") or None),
        help="client certificate chain, for a server that requires mutual TLS "
        "($RETOUCH_CERT_FILE; with --key-file)",
    )
    parser.add_argument(
        "--key-file",
        metavar="PEM",
        default=default(os.environ.get("RETOUCH_KEY_FILE") or None),
        help="the client certificate's private key ($RETOUCH_KEY_FILE)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output: one JSON object per line on stdout",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(None),
        help=f"deadline (default {EDIT_TIMEOUT:g} s for edits, {UNARY_TIMEOUT:g} s otherwise)",
    )
    parser.add_argument(
        "--retries",
        type=_int_range(0, 10),
        metavar="N",
        default=default(2),
        help="retries of a call the server asks to retry later, or that could not "
        "connect (default 2; edits keep their request id, so they are never charged twice)",
    )


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..1")
    return value
