#!/usr/bin/env bash
# Regenerate the Python stubs beside the .proto sources (import name secureinfer.v1; see setup.py).
# tests/nodes/test_protos.py fails when the checked-in stubs drift from what this produces.
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. secureinfer/v1/*.proto
