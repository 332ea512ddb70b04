#!/bin/sh
# Fails when the committed src/gen/ differs from what scripts/gen.sh writes.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$here/scripts/gen.sh" "$tmp"
if ! diff -r "$tmp/src/gen" "$here/src/gen"; then
  echo "clients/typescript/src/gen is stale: run 'make gen' (or 'npm run gen') and commit the result" >&2
  exit 1
fi
echo "generated TypeScript stubs are up to date"
