"""The bench's baseline servers run the code of the revision they name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.baseline import BEFORE_SHARED_ENGINES, RevisionMissing, checkout
from bench.processes import ROOT, Source, retouch_server


def test_a_revision_the_clone_lacks_is_refused_by_name() -> None:
    missing = "0" * 40
    with pytest.raises(RevisionMissing, match=f"{missing}.*full history"), checkout(missing, "x"):
        pass


def test_a_checkout_holds_the_revision_and_disables_the_plugins_it_lacked() -> None:
    with checkout(BEFORE_SHARED_ENGINES, "before issue 8") as source:
        registry = source.root / "server/src/retouch/server/registry.py"
        old = subprocess.run(
            ["git", "show", f"{BEFORE_SHARED_ENGINES}:server/src/retouch/server/registry.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert registry.read_text() == old
        assert source.src_dirs[0] == source.root / "server/src"
        assert "replicate" in source.disabled_providers  # added after that revision
        assert "opencv" not in source.disabled_providers


def test_a_baseline_server_imports_its_modules_from_the_checkout(tmp_path: Path) -> None:
    with (
        checkout(BEFORE_SHARED_ENGINES, "before issue 8") as source,
        retouch_server(tmp_path, source=source) as port,
    ):
        assert port > 0


def test_a_server_that_imports_code_from_elsewhere_is_refused(tmp_path: Path) -> None:
    elsewhere = Source("not the working tree", tmp_path / "elsewhere")
    with (
        pytest.raises(RuntimeError, match="was to run the code under"),
        retouch_server(tmp_path / "data", source=elsewhere),
    ):
        pass
