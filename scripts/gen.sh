#!/usr/bin/env bash
# Regenerates the Python stubs of the contract into $1 (default: the client package), and
# descriptors.binpb: the contract's descriptors with their comments, which the server's
# reflection serves so that `grpcurl describe` shows them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/clients/python/src}
bin=$(dirname "$(command -v python)")
mkdir -p "$out/retouch/v1"
rm -f "$out"/retouch/v1/*_pb2*.py "$out"/retouch/v1/*_pb2*.pyi "$out"/retouch/v1/descriptors.binpb
python -m grpc_tools.protoc -I "$root/protos" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  --include_imports --include_source_info \
  --descriptor_set_out="$out/retouch/v1/descriptors.binpb" \
  "$root"/protos/retouch/v1/*.proto
