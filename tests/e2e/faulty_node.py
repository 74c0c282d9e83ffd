"""A node process that deviates in one way, for tests only: every output it sends a client arrives with its first
share component one ring unit off, while its vouchers to its neighbours stay those of the true component.

Run as a launch prefix (tests/e2e/test_deviation.py): `python faulty_node.py PYTHON -c LAUNCHER PID node serve ...`;
it patches the sending side of the node's session channels, then runs the launcher in this process (so the node is
still the test process's child). Nothing of the package imports this file: production nodes never deviate.
"""

from __future__ import annotations

import sys

import torch

from secureinfer.models.requests import CLIENT
from secureinfer.net.transport import GrpcChannel

_honest_send = GrpcChannel.send


def _altering_send(self: GrpcChannel, to: str, payload, tag: str = "") -> None:
    if to == CLIENT and tag == "output" and isinstance(payload, torch.Tensor) and payload.dtype == torch.int64:
        payload = payload + 1  # the first component of an output share, as sent to the client only
    _honest_send(self, to, payload, tag)


def main() -> None:
    GrpcChannel.send = _altering_send  # type: ignore[method-assign]
    code = sys.argv[3]  # argv: this file, the interpreter, -c, the launcher's code, its arguments
    sys.argv = ["-c", *sys.argv[4:]]
    exec(compile(code, "<launcher>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
