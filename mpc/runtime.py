"""A small SPMD runtime: write one program, run it as three parties (threads) over an in-memory network.

    result = runtime.simulate(lambda p, x, y: reveal(p, mul.mul_fixed(p, x, y)), inputs=[x, y])
    result.outputs[0]   # what party 0 returned
    result.stats[0]     # rounds, messages and bytes party 0 spent in the program (set-up and inputs excluded)

Inputs are shared by an outside owner ("owner"), as a client or model owner would share them; float tensors are
encoded in the session's fixed point, int64 tensors are taken as raw ring elements. An optional `client(channel)`
runs as a fifth participant ("client") beside the owner: e.g. the model owner publishes weights while the client
sends its prompt and alone reconstructs the outputs (`Simulation.client_output`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .comm import Channel, CommStats, LinkModel, MemoryNetwork
from .comm.audit import Recorder
from .party import PARTY_NAMES, EngineConfig, Party
from .protocols import sharing
from .ring import RING_DTYPE

OWNER = "owner"
CLIENT = "client"


@dataclass
class Simulation:
    """What a simulated run returned: each party's output and communication counters, and the owner's output."""

    outputs: list[Any]
    stats: list[CommStats]
    owner_output: Any = None
    client_output: Any = None

    @property
    def max_rounds(self) -> int:
        return max(s.rounds for s in self.stats)

    @property
    def max_bytes_sent(self) -> int:
        return max(s.bytes_sent for s in self.stats)


def _encode_input(x: torch.Tensor, config: EngineConfig) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dtype == RING_DTYPE:
        return x.to(config.torch_device)
    return config.fxp.encode(x, config.torch_device)


def simulate(
    program: Callable[..., Any],
    *,
    inputs: Sequence[torch.Tensor] = (),
    owner: Callable[[Channel], Any] | None = None,
    client: Callable[[Channel], Any] | None = None,
    config: EngineConfig | None = None,
    link: LinkModel | None = None,
    timeout_s: float = 120.0,
    recorder: Recorder | None = None,
) -> Simulation:
    """Run `program(party, *input_shares)` on three parties; `owner(channel)` and `client(channel)`, if given, run
    beside them (the client on a fifth channel named CLIENT). `link` shapes the links between the parties and the
    client; the owner's links are not shaped (its inputs and weights are set-up, outside the measured figures).
    `recorder` (leakage audit, comm/audit.py) records every message each party receives, set-up included."""
    config = config or EngineConfig()
    encoded = [_encode_input(x, config) for x in inputs]
    names = [*PARTY_NAMES, OWNER] + ([CLIENT] if client is not None else [])
    network = MemoryNetwork(names, link=link, timeout_s=timeout_s, unshaped=(OWNER,))
    outputs: list[Any] = [None] * 3
    stats: list[CommStats] = [CommStats()] * 3
    owner_output: list[Any] = [None]
    client_output: list[Any] = [None]
    errors: list[BaseException] = []

    def run_party(index: int) -> None:
        channel: Channel = network.channel(PARTY_NAMES[index])
        party = Party.connect(index, recorder.wrap(channel) if recorder else channel, config)
        shares = [sharing.receive_input(party, OWNER) for _ in encoded]
        before = party.channel.stats.snapshot()
        outputs[index] = program(party, *shares)
        stats[index] = party.channel.stats.since(before)

    def run_owner() -> None:
        channel = network.channel(OWNER)
        for x in encoded:
            sharing.send_input(channel, x)
        if owner is not None:
            owner_output[0] = owner(channel)

    def run_client() -> None:
        client_output[0] = client(network.channel(CLIENT))

    def guarded(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            network.abort(exc)

    threads = [threading.Thread(target=guarded, args=(run_party, i), name=PARTY_NAMES[i]) for i in range(3)]
    threads.append(threading.Thread(target=guarded, args=(run_owner,), name=OWNER))
    if client is not None:
        threads.append(threading.Thread(target=guarded, args=(run_client,), name=CLIENT))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return Simulation(outputs, stats, owner_output[0], client_output[0])
