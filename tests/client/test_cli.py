"""The ``retouch`` command line, in-process through ``main(argv)`` and as a real process.

``main`` runs its own event loop, so the tests call it from a worker thread while the
server keeps running on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from retouch.client import AsyncClient, JobState
from retouch.client.cli import main
from retouch.server.config import DEV_API_KEY
from tests.client.fakes import FakeAccount, Held
from tests.helpers import decode_png, png, square_mask


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RETOUCH_SERVER", "RETOUCH_API_KEY", "RETOUCH_SUBJECT"):
        monkeypatch.delenv(name, raising=False)


async def retouch(*argv: str | Path) -> int:
    return await asyncio.to_thread(main, [str(a) for a in argv])


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_inpaint_saves_the_result_and_prints_its_path(
    target: str,
    photo_file: Path,
    mask_file: Path,
    out_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = out_dir / "fixed.png"

    code = await retouch(
        "--server", target, "inpaint", photo_file, "--mask", mask_file, "--out", out
    )

    printed = capsys.readouterr()
    assert code == 0
    assert printed.out == f"{out}\n"
    assert decode_png(await asyncio.to_thread(out.read_bytes)).shape == (256, 256, 3)
    assert "accepted job" in printed.err
    assert "completed job" in printed.err


async def test_without_out_the_result_is_named_after_the_input(
    target: str,
    photo_file: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(out_dir)

    code = await retouch(
        "--server", target, "enhance", photo_file, "--upscale", "2", "--format", "jpeg"
    )

    assert code == 0
    assert capsys.readouterr().out == "photo.enhance.jpg\n"
    assert (await asyncio.to_thread((out_dir / "photo.enhance.jpg").read_bytes))[
        :3
    ] == b"\xff\xd8\xff"


async def test_json_output_is_one_object_per_event_then_the_saved_file(
    target: str, photo_file: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = out_dir / "wide.png"

    code = await retouch(
        "--server", target, "outpaint", photo_file, "--left", "32", "--out", out, "--json"
    )

    printed = capsys.readouterr()
    lines = json_lines(printed.out)
    types = [line["type"] for line in lines]
    assert code == 0
    assert types[0] == "accepted"
    assert types[-2:] == ["completed", "saved"]
    assert set(types[1:-2]) == {"progress"}
    assert lines[-2]["image"] == {
        "width": 288,
        "height": 256,
        "format": "png",
        "size_bytes": lines[-1]["size_bytes"],
        "content_type": "image/png",
    }
    assert lines[-1]["path"] == str(out)
    assert printed.err == ""


async def test_jobs_and_watch_report_earlier_jobs(
    target: str, photo_file: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await retouch("--server", target, "enhance", photo_file, "--sharpen", "--out", out_dir)
    capsys.readouterr()

    assert await retouch("--server", target, "--json", "jobs", "--state", "succeeded") == 0
    (listing,) = json_lines(capsys.readouterr().out)
    jobs = listing["jobs"]
    assert isinstance(jobs, list)
    assert [(j["operation"], j["state"]) for j in jobs] == [("enhance", "succeeded")]
    job_id = jobs[0]["job_id"]

    assert await retouch("--server", target, "jobs") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["JOB", "STATE", "OPERATION", "PROVIDER", "CREATED", "RESULT"]
    assert table[1].startswith(f"{job_id}  succeeded  enhance")

    assert await retouch("--server", target, "watch", job_id, "--after-seq", "1", "--json") == 0
    replayed = json_lines(capsys.readouterr().out)
    assert replayed[0]["seq"] == 2
    assert replayed[-1]["type"] == "completed"


async def test_providers_and_usage(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await retouch("--server", target, "providers", "--operation", "outpaint") == 0
    assert "opencv" in capsys.readouterr().out

    account = FakeAccount()
    async with account.serve() as fake:
        assert await retouch("--server", fake, "--subject", "user:42", "usage") == 0
        text = capsys.readouterr().out
        assert await retouch("--server", fake, "usage", "--json") == 0
        (usage,) = json_lines(capsys.readouterr().out)

    assert "plan     free" in text
    assert "quota    3 of 100 used, 97 left" in text
    assert (usage["plan"], usage["credits_balance"], usage["quota_left"]) == ("free", 50, 97)
    assert account.metadata[0]["x-retouch-subject"] == "user:42"


async def test_out_dash_writes_the_image_to_stdout(
    target: str, photo_file: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code = await retouch("--server", target, "enhance", photo_file, "--denoise", "--out", "-")

    assert code == 0
    assert capsysbinary.readouterr().out.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["inpaint", "{photo}", "--mask", "{small_mask}"], "mask is 10x10"),
        (["inpaint", "{missing}"], "no such file"),
        (["inpaint", "{photo}", "--out", "{missing}/x.png"], "no such directory"),
        (["enhance", "{photo}"], "one of the arguments --upscale --denoise --sharpen"),
        (["outpaint", "{photo}", "--left", "-3"], "-3 is not in 0..65536"),
    ],
)
async def test_bad_input_exits_2(
    target: str,
    photo_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: Sequence[str],
    expected: str,
) -> None:
    small_mask = tmp_path / "small.png"
    await asyncio.to_thread(small_mask.write_bytes, png(square_mask((10, 10), (0, 0, 5, 5))))
    paths = {"photo": photo_file, "small_mask": small_mask, "missing": tmp_path / "missing"}

    code = await retouch("--server", target, *[a.format(**paths) for a in argv])

    assert code == 2
    assert expected in capsys.readouterr().err


async def test_refusals_exit_3_and_say_why(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await retouch("--server", target, "--key", "wrong", "providers") == 3
    assert "reason: INVALID_API_KEY" in capsys.readouterr().err

    assert await retouch("--server", target, "--json", "watch", "job_nope") == 3
    (error,) = json_lines(capsys.readouterr().out)
    assert error["error"]["code"] == "NOT_FOUND"  # type: ignore[index]
    assert error["error"]["exit_code"] == 3  # type: ignore[index]


async def test_an_unreachable_server_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    server = f"127.0.0.1:{closed_port()}"

    code = await retouch("--server", server, "--retries", "0", "jobs")

    assert code == 4
    err = capsys.readouterr().err
    assert err.startswith("retouch: UNAVAILABLE: ")
    assert f"is retouch-server running at {server}?" in err


async def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert await retouch("--help") == 0

    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code in ("0 ", "2 ", "3 ", "4 ", "130"):
        assert f"\n  {code}" in text


async def run_process(*argv: str | Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "retouch.client.cli",
        *[str(a) for a in argv],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_the_command_runs_as_a_program(
    target: str, photo_file: Path, mask_file: Path, out_dir: Path
) -> None:
    out = out_dir / "fixed.webp"

    process = await run_process(
        "--server",
        target,
        "inpaint",
        photo_file,
        "--mask",
        mask_file,
        "--format",
        "webp",
        "--out",
        out,
    )
    stdout, stderr = await process.communicate()

    assert process.returncode == 0, stderr.decode()
    assert stdout.decode() == f"{out}\n"
    assert (await asyncio.to_thread(out.read_bytes)).startswith(b"RIFF")


async def test_ctrl_c_cancels_the_running_job_and_exits_130(
    held: Held, photo_file: Path, mask_file: Path, out_dir: Path
) -> None:
    process = await run_process(
        "--server",
        held.target,
        "--json",
        "inpaint",
        photo_file,
        "--mask",
        mask_file,
        "--out",
        out_dir,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        accepted = json.loads(await process.stdout.readline())
        while json.loads(await process.stdout.readline())["type"] != "progress":
            pass
        process.send_signal(signal.SIGINT)
        rest, _ = await process.communicate()

    assert process.returncode == 130
    assert json.loads(rest.splitlines()[-1])["error"]["code"] == "CANCELLED"
    async with AsyncClient(held.target, api_key=DEV_API_KEY) as client:
        job = await client.get_job(accepted["job_id"])
    assert job.state is JobState.CANCELLED
    assert held.provider.cancelled == 1


async def test_an_existing_output_is_never_overwritten_without_force(
    target: str,
    photo_file: Path,
    mask_file: Path,
    out_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = out_dir / "kept.png"
    out.write_bytes(b"precious")

    refused = await retouch(
        "--server", target, "inpaint", photo_file, "--mask", mask_file, "-o", out
    )

    assert refused == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    forced = await retouch(
        "--server", target, "inpaint", photo_file, "--mask", mask_file, "-o", out, "--force"
    )
    assert forced == 0
    assert decode_png(out.read_bytes()).shape == (256, 256, 3)


async def test_a_bad_input_is_named_image_or_mask(
    target: str, photo_file: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_an_image = out_dir / "notes.png"
    not_an_image.write_text("not an image")

    bad_mask = await retouch(
        "--server", target, "inpaint", photo_file, "--mask", not_an_image, "-o", out_dir
    )
    assert bad_mask == 2
    assert f"the mask ({not_an_image})" in capsys.readouterr().err
    bad_image = await retouch(
        "--server", target, "inpaint", not_an_image, "--mask", photo_file, "-o", out_dir
    )
    assert bad_image == 2
    assert f"the image ({not_an_image})" in capsys.readouterr().err


async def test_batch_inpaints_a_folder_and_reports_each_image(
    target: str,
    tmp_path: Path,
    photo_png: bytes,
    mask_png: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, masks, results = (tmp_path / n for n in ("images", "masks", "results"))
    for folder in (images, masks, results):
        folder.mkdir()
    for name in ("a", "b", "c"):
        (images / f"{name}.png").write_bytes(photo_png)
    for name in ("a", "b"):  # c has no mask
        (masks / f"{name}.png").write_bytes(mask_png)

    code = await retouch(
        "--server", target, "batch", images, "--masks", masks, "-o", results, "-j", "2"
    )

    printed = capsys.readouterr()
    assert code == 2, printed.err
    assert f"ok      {images / 'a.png'} -> {results / 'a.inpaint.png'}" in printed.out
    assert f"failed  {images / 'c.png'}: no mask named c.* in {masks}" in printed.out
    assert "2 of 3 succeeded, 1 failed" in printed.out
    assert "3/3 done, 1 failed" in printed.err
    for name in ("a", "b"):
        assert decode_png((results / f"{name}.inpaint.png").read_bytes()).shape == (256, 256, 3)
    assert not (results / "c.inpaint.png").exists()

    (images / "c.png").unlink()
    again = await retouch("--server", target, "batch", images, "--masks", masks, "-o", results)
    assert again == 2
    assert "exists; pass --force" in capsys.readouterr().out
    forced = await retouch(
        "--server", target, "batch", images, "--masks", masks, "-o", results, "--force"
    )
    assert forced == 0
    assert "2 of 2 succeeded, 0 failed" in capsys.readouterr().out
