"""The client's cross-check of opened outputs (reveal.reveal_to_owner / reveal_at_owner with Witness and OutputCheck):
every component arrives from both parties that hold it (in full from one, as a digest from the other), and a party that sends the client a component other than the
one it vouched for to the other holder is named; deviations the vouchers cannot attribute name the pair.

Each test runs three simulated parties that open a shared tensor to the client, one of them deviating in a chosen way
(the attack), and checks whom the client names.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.party import EngineConfig, Party
from secureinfer.mpc.protocols import reveal
from secureinfer.mpc.shares import AShare

SECRET = torch.arange(-12, 12, dtype=torch.float64).reshape(2, 3, 4) / 8
ONE = torch.ones(2, 3, 4, dtype=torch.int64)

Deviation = Callable[[Party, AShare, reveal.Witness], None]  # a corrupt party's whole output step


def honest(party: Party, x: AShare, witness: reveal.Witness) -> None:
    reveal.reveal_to_owner(party, x, runtime.CLIENT, witness=witness)


def alter_first(party: Party, x: AShare, witness: reveal.Witness) -> None:
    """Sends the client x_i + 1 but vouches for the true x_i (the attack the cross-check names)."""
    party.channel.send(runtime.CLIENT, x.lo + ONE, "output")
    party.channel.send(runtime.CLIENT, reveal.digest(x.hi), "output.digest")
    witness.vouch(party, reveal.digest(x.lo), reveal.digest(x.hi))


def alter_second(party: Party, x: AShare, witness: reveal.Witness) -> None:
    party.channel.send(runtime.CLIENT, x.lo, "output")
    party.channel.send(runtime.CLIENT, reveal.digest(x.hi - ONE), "output.digest")
    witness.vouch(party, reveal.digest(x.lo), reveal.digest(x.hi))


def alter_both(party: Party, x: AShare, witness: reveal.Witness) -> None:
    """Alters both components and vouches for the altered ones (as after a deviation earlier on)."""
    reveal.reveal_to_owner(party, AShare(x.lo + ONE, x.hi + ONE, x.party), runtime.CLIENT, witness=witness)


def alter_consistently(party: Party, x: AShare, witness: reveal.Witness) -> None:
    """Alters its first component everywhere, vouchers included: two self-consistent copies."""
    reveal.reveal_to_owner(party, AShare(x.lo + ONE, x.hi, x.party), runtime.CLIENT, witness=witness)


def garble_forwarded(party: Party, x: AShare, witness: reveal.Witness) -> None:
    """Honest output, then the vouchers it forwards are garbled (collected first, as finish does)."""
    reveal.reveal_to_owner(party, x, runtime.CLIENT, witness=witness)
    witness.collect(party)
    witness.received = {k: bytes(reveal.MAC_BYTES) for k in witness.received}


class _Silent(reveal.Witness):
    """No vouchers at all: the two copies alone (what reveal_to_owner without a witness sends)."""

    def vouch(self, party: Party, lo_digest: bytes, hi_digest: bytes) -> None:
        pass

    def collect(self, party: Party) -> None:
        pass


def run(corrupt: int | None, deviation: Deviation, *, with_check: bool = True) -> torch.Tensor:
    """Open a shared SECRET to the client, party `corrupt` deviating; the client's reconstruction (or its error)."""

    def program(party: Party, x: AShare) -> None:
        witness = reveal.Witness(runtime.CLIENT) if with_check else _Silent(runtime.CLIENT)
        act = deviation if party.index == corrupt else honest
        act(party, x, witness)
        witness.finish(party)

    def client(channel) -> torch.Tensor:
        check = reveal.OutputCheck() if with_check else None
        if check is not None:
            check.send_keys(channel)
        try:
            value = reveal.reveal_at_owner(channel, check=check)
        except reveal.OutputMismatch as exc:
            if exc.settled or check is None:
                raise
            check.finish(channel)
            raise
        if check is not None:
            check.finish(channel)
        return value

    return runtime.simulate(program, inputs=[SECRET], client=client).client_output


def test_bytes_grow_by_a_digest_and_two_vouchers() -> None:
    """Each party sends the client its first component (as before) and the 32-byte digest of its second, and each
    neighbour one 32-byte voucher; at the end it forwards the two vouchers it got (64 bytes)."""

    def program(party: Party, x: AShare) -> None:
        witness = reveal.Witness(runtime.CLIENT)
        reveal.reveal_to_owner(party, x, runtime.CLIENT, witness=witness)
        witness.finish(party)

    def client(channel) -> torch.Tensor:
        check = reveal.OutputCheck()
        check.send_keys(channel)
        value = reveal.reveal_at_owner(channel, check=check)
        check.finish(channel)
        return value

    sim = runtime.simulate(program, inputs=[SECRET], client=client)
    component = 8 * SECRET.numel()
    for index, stats in enumerate(sim.stats):
        assert stats.bytes_to[runtime.CLIENT] == component + reveal.DIGEST_BYTES + 2 * reveal.MAC_BYTES
        assert all(stats.bytes_to[f"P{j}"] == reveal.MAC_BYTES for j in range(3) if j != index)


def named(corrupt: int | None, deviation: Deviation, **kwargs) -> tuple[str, ...]:
    with pytest.raises(reveal.OutputMismatch) as info:
        run(corrupt, deviation, **kwargs)
    assert info.value.settled
    print(info.value)
    return info.value.parties


def test_honest_parties_open_the_value() -> None:
    assert torch.equal(EngineConfig().fxp.decode(run(None, honest)), SECRET)
    assert torch.equal(EngineConfig().fxp.decode(run(None, honest, with_check=False)), SECRET)


@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_party_that_alters_one_component_it_sends_is_named(corrupt: int) -> None:
    assert named(corrupt, alter_first) == (f"P{corrupt}",)
    assert named(corrupt, alter_second) == (f"P{corrupt}",)


@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_party_that_alters_both_components_is_named_even_when_it_vouches_for_them(corrupt: int) -> None:
    assert named(corrupt, alter_both) == (f"P{corrupt}",)


@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_consistent_alteration_of_one_component_names_the_pair(corrupt: int) -> None:
    """The limit of two copies: P_i altering x_i everywhere looks like P_{i-1} altering its copy everywhere."""
    assert named(corrupt, alter_consistently) == tuple(sorted({f"P{(corrupt - 1) % 3}", f"P{corrupt}"}))


@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_forwarder_cannot_frame_a_neighbour(corrupt: int) -> None:
    """Garbling both vouchers it forwards puts the forwarder in both suspected pairs: it alone is named."""
    assert named(corrupt, garble_forwarded) == (f"P{corrupt}",)


def test_without_vouchers_two_copies_name_a_pair_or_the_party_holding_both() -> None:
    assert set(named(1, alter_first, with_check=False)) == {"P0", "P1"}
    assert named(1, alter_both, with_check=False) == ("P1",)
