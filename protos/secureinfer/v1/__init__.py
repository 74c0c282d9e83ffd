"""Generated gRPC stubs for package `secureinfer.v1` (from node.proto; regenerate with `protos/generate.sh`)."""
