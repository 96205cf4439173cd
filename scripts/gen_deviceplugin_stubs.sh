#!/usr/bin/env bash
# Regenerate the device plugin's gRPC stubs from extender/deviceplugin/api/deviceplugin.proto
# (our own proto of the kubelet API v1beta1). The generated files are committed; run this after
# editing the proto or changing the grpcio-tools pin, then commit them.
#
# The proto is copied into a temporary tree that mirrors the installed module path so that the
# generated *_pb2_grpc.py imports `qosched.extender.deviceplugin.api.deviceplugin_pb2`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/qosched/extender/deviceplugin/api"
cp "$root/extender/deviceplugin/api/deviceplugin.proto" "$tmp/qosched/extender/deviceplugin/api/"
"$python" -m grpc_tools.protoc -I "$tmp" \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  "$tmp/qosched/extender/deviceplugin/api/deviceplugin.proto"
for f in deviceplugin_pb2.py deviceplugin_pb2.pyi deviceplugin_pb2_grpc.py; do
  cp "$tmp/qosched/extender/deviceplugin/api/$f" "$root/extender/deviceplugin/api/$f"
done
echo "regenerated extender/deviceplugin/api/deviceplugin_pb2{.py,.pyi,_grpc.py}"
