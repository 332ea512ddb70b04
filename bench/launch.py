"""``python -m bench.launch``: ``python -m retouch.server``, after saying on stderr where
the server, the SDK, the opencv plugin and the stubs were imported from, so that the
bench can check a baseline server really runs the earlier revision's code
(:func:`bench.processes.retouch_server`)."""

from __future__ import annotations

import importlib
import runpy
import sys

MODULES = ("retouch.server", "retouch.sdk", "retouch.providers.opencv", "retouch.v1")


def main() -> None:
    for name in MODULES:
        module = importlib.import_module(name)
        print(f"bench.launch: {name} from {module.__file__}", file=sys.stderr, flush=True)
    sys.argv = sys.argv[:1]
    runpy.run_module("retouch.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
