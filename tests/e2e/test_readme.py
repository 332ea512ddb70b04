"""README's shell and Python examples, run as written against a real server.

The blocks run in order, in one fresh directory, with the server's address put in
for README's 127.0.0.1:50051 and the virtual environment's ``bin`` first on PATH (as
``make install`` leaves it). A block preceded by ``<!-- not run by
tests/e2e/test_readme.py: why -->`` is skipped, and says why.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from retouch.server.app import RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:50051"
SKIP_MARK = "<!-- not run by tests/e2e/test_readme.py:"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int


def readme_blocks() -> list[Block]:
    """README's ``sh`` and ``python`` blocks that are meant to run."""
    text = README.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        language, code = match.group(1), match.group(2)
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        if language in ("sh", "python") and not before.startswith(SKIP_MARK):
            blocks.append(Block(language, code, text.count("\n", 0, match.start()) + 1))
    return blocks


def test_readme_has_examples_to_run() -> None:
    languages = [b.language for b in readme_blocks()]
    assert languages.count("python") >= 2
    assert languages.count("sh") >= 3


async def test_readme_examples_run_as_written(server: RunningServer, tmp_path: Path) -> None:
    address = f"127.0.0.1:{server.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "OTEL_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RETOUCH_SERVER"] = address
    for number, block in enumerate(readme_blocks()):
        code = block.code.replace(README_ADDRESS, address)
        if block.language == "python":
            script = tmp_path / f"readme_{number}.py"
            script.write_text(code)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-euo", "pipefail", "-c", code]
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 240)
        assert process.returncode == 0, (
            f"README.md line {block.line} ({block.language}) failed:\n"
            f"{out.decode()[-2000:]}\n{err.decode()[-4000:]}"
        )
    for written in ("photo.png", "mask.png", "result.png", "fixed.png", "wider.png"):
        assert (tmp_path / written).stat().st_size > 0, written
