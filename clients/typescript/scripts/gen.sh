#!/bin/sh
# Regenerates src/gen/ from ../../protos with buf and the local protoc-gen-es.
# With an argument, writes <dir>/src/gen instead (scripts/gen-check.sh uses this).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"
if [ ! -x node_modules/.bin/protoc-gen-es ]; then
  echo "node_modules/.bin/protoc-gen-es is missing: run 'npm ci' in clients/typescript" >&2
  exit 1
fi
# buf: $BUF, else the repository's pinned one (buf-bin in .venv), else the one on PATH.
buf=${BUF:-$root/.venv/bin/buf}
[ -x "$buf" ] || buf=$(command -v buf || true)
if [ -z "$buf" ] || [ ! -x "$buf" ]; then
  echo "buf not found: run 'make install' at the repository root, or put buf on PATH" >&2
  exit 1
fi
"$buf" generate "$root/protos" --template buf.gen.yaml --output "${1:-.}"
