#!/usr/bin/env bash
# Fails when clients/python/src/retouch/v1 differs from what `make gen` would write.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/scripts/gen.sh" "$tmp"
if ! diff -r -x '__init__.py' -x 'py.typed' -x '__pycache__' "$tmp/retouch/v1" "$root/clients/python/src/retouch/v1"; then
  echo "generated stubs are stale: run 'make gen' and commit the result" >&2
  exit 1
fi
echo "generated stubs are up to date"
