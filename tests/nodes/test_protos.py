"""The checked-in gRPC stubs must be exactly what protos/generate.sh makes from the .proto sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parents[2] / "protos"
GENERATED = ("node_pb2.py", "node_pb2.pyi", "node_pb2_grpc.py")


def test_generated_stubs_match_proto_sources(tmp_path):
    shutil.copytree(PROTOS / "secureinfer", tmp_path / "secureinfer",
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
                    "--grpc_python_out=.", "secureinfer/v1/node.proto"], cwd=tmp_path, check=True)
    for name in GENERATED:
        fresh = (tmp_path / "secureinfer" / "v1" / name).read_text()
        checked_in = (PROTOS / "secureinfer" / "v1" / name).read_text()
        assert fresh == checked_in, f"{name} drifted from node.proto: run protos/generate.sh"


def test_stubs_import_under_the_package_name():
    from secureinfer.v1 import node_pb2, node_pb2_grpc

    assert node_pb2.DESCRIPTOR.package == "secureinfer.v1"
    assert {s for s in node_pb2.DESCRIPTOR.services_by_name} == {"Peer", "Inference", "Membership", "Records"}
    assert hasattr(node_pb2_grpc, "InferenceStub")
