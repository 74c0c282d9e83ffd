"""Opening secrets. These are the only functions in the engine that turn shares into plaintext.

Each party i holds (x_i, x_{i+1}) and misses x_{i-1}, which party i-1 holds as its first component. Opening to
everyone therefore costs one round and one ring element per party; opening to one party costs one element.

Opening to an outside owner (the client) is cross-checked: every party sends its first component and the SHA-256
digest of its second, so each component reaches the owner from both parties that hold it (once in full, once as a
digest: as binding as a second copy, for 32 bytes), and the owner reconstructs only when every pair agrees. Two
disagreeing copies say which pair disagrees, not which of the two deviated; to name the party, each party also
vouches for the digest of each component it holds to the other holder (an HMAC under a key the owner gave it alone),
and that holder forwards the voucher to the owner when the session ends. A party that sends the owner a component
other than the one it vouched for contradicts its own voucher, which its neighbour cannot forge, and is named; a
party that vouches for its altered component too (as after a deviation earlier in the computation) leaves two
self-consistent copies, and only the pair is named (unless it altered both its components: it is then the one party
in both disagreeing pairs). A step's vouchers are received while the next step runs (or at the end), so the opening
keeps its one round.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass, field

import torch

from ..comm import Channel, CommError
from ..party import PARTY_NAMES, Party
from ..shares import AShare, BShare, _Replicated

KEY_TAG, VOUCH_TAG, VOUCHED_TAG = "witness.key", "vouch", "vouched"  # owner to party, party to party, party to owner
DIGEST_SUFFIX = ".digest"  # the digest of a party's second component travels under the output's tag plus this
KEY_BYTES = MAC_BYTES = DIGEST_BYTES = 32


def _combine(x: _Replicated, missing: torch.Tensor) -> torch.Tensor:
    if isinstance(x, BShare):
        return x.lo ^ x.hi ^ missing
    return x.lo + x.hi + missing


def _check_missing(party: Party, x: _Replicated, missing: torch.Tensor, frm: int) -> torch.Tensor:
    if not isinstance(missing, torch.Tensor) or missing.shape != x.shape or missing.dtype != x.lo.dtype:
        raise CommError(f"{party.name} got a malformed share from P{frm} while revealing")
    return missing.to(x.device)


def reveal(party: Party, x: AShare | BShare, tag: str = "reveal") -> torch.Tensor:
    """Open `x` to all three parties: send x_i to the next party, receive x_{i-1} from the previous. 1 round."""
    party.send(party.next, x.lo, tag)
    missing = _check_missing(party, x, party.recv(party.prev, tag), party.prev)
    return _combine(x, missing)


def reveal_to(party: Party, x: AShare | BShare, to: int, tag: str = "reveal_to") -> torch.Tensor | None:
    """Open `x` to party `to` only (party `to`-1 sends it the missing component); others get None. 1 round."""
    if party.index == (to - 1) % 3:
        party.send(to, x.lo, tag)
    if party.index != to:
        return None
    missing = _check_missing(party, x, party.recv(party.prev, tag), party.prev)
    return _combine(x, missing)


# ---------------------------------------------------------------------------------------------------- to an owner


class OutputMismatch(Exception):
    """The two copies of an output component the owner received disagree, or a party's voucher contradicts what it
    sent: some party deviated. `parties` names it (one name) or, where the evidence cannot tell, the pair that
    disagrees (two names); `settled` is False until the session's vouchers were weighed."""

    def __init__(self, parties: tuple[str, ...], detail: str, step: int, settled: bool = True) -> None:
        who = parties[0] if len(parties) == 1 else " or ".join(parties)
        super().__init__(f"output step {step}: {detail} (deviating: {who})")
        self.parties, self.detail, self.step, self.settled = parties, detail, step, settled


def digest(value: torch.Tensor) -> bytes:
    """SHA-256 of a share component: its dtype width, shape and bytes."""
    array = value.detach().cpu().contiguous().numpy()
    sha = hashlib.sha256(struct.pack(f"<BB{value.dim()}q", array.itemsize, value.dim(), *value.shape))
    sha.update(array.tobytes() if array.size == 0 else array)
    return sha.digest()


def _voucher(key: bytes, step: int, component: int, component_digest: bytes) -> bytes:
    """A party's HMAC-SHA256 over the digest of one output component it holds (which step, which component), under
    the key the owner gave that party alone."""
    return hmac.new(key, struct.pack("<qq", step, component) + component_digest, hashlib.sha256).digest()


@dataclass
class Witness:
    """A party's side of the owner's cross-check for one session: its key (from the owner, at the first output),
    how many outputs it sent, and the vouchers its neighbours sent it for the last one."""

    owner: str
    key: bytes | None = None
    steps: int = 0
    collected: int = 0  # outputs whose neighbours' vouchers were received
    received: dict[int, bytes] = field(default_factory=dict)  # neighbour index -> its voucher of the last step

    def vouch(self, party: Party, lo_digest: bytes, hi_digest: bytes) -> None:
        """Vouch for x_i to the previous party and for x_{i+1} to the next (the other holder of each)."""
        if self.key is None:
            key = party.channel.recv(self.owner, KEY_TAG)
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise CommError(f"{party.name} got a malformed voucher key from {self.owner}")
            self.key = key
        party.send(party.prev, _voucher(self.key, self.steps, party.index, lo_digest), VOUCH_TAG)
        party.send(party.next, _voucher(self.key, self.steps, party.next, hi_digest), VOUCH_TAG)
        self.steps += 1

    def finish(self, party: Party) -> None:
        """At the session's end: collect the last output's vouchers and forward them to the owner (from the
        previous party, then from the next)."""
        self.collect(party)
        if self.received:
            party.channel.send(self.owner, self.received[party.prev] + self.received[party.next], VOUCHED_TAG)

    def collect(self, party: Party) -> None:
        """Receive the neighbours' vouchers of the previous output: at the start of the next step, before any of its
        messages between parties (the links keep order), or at the end."""
        if self.steps == self.collected:
            return
        self.collected = self.steps
        for frm in (party.prev, party.next):
            voucher = party.recv(frm, VOUCH_TAG)
            if not isinstance(voucher, bytes) or len(voucher) != MAC_BYTES:
                raise CommError(f"{party.name} got a malformed voucher from P{frm}")
            self.received[frm] = voucher


def reveal_to_owner(party: Party, x: AShare | BShare, owner: str, tag: str = "output",
                    witness: Witness | None = None) -> None:
    """Send an outside `owner` (the client) this party's first component and the digest of its second, so that the
    owner alone reconstructs the value and checks each component against the other holder's digest; with a
    `witness`, vouch for both to the neighbours too."""
    hi_digest = digest(x.hi)
    party.channel.send(owner, x.lo, tag)
    party.channel.send(owner, hi_digest, tag + DIGEST_SUFFIX)
    if witness is not None:  # after the output: its key comes with the client's first step, after the inputs
        witness.vouch(party, digest(x.lo), hi_digest)


@dataclass
class OutputCheck:
    """The owner's side of the cross-check for one session: a fresh key per party (sent after the first step's
    inputs), how many outputs were opened, and the last one's digests (weighed against the vouchers)."""

    parties: tuple[str, ...] = PARTY_NAMES
    keys: tuple[bytes, ...] = field(default_factory=lambda: tuple(secrets.token_bytes(KEY_BYTES) for _ in range(3)))
    steps: int = 0
    keys_sent: bool = False
    last: tuple[list[bytes], list[bytes]] | None = None  # per component j: digest of P_j's copy, P_{j-1}'s digest

    def send_keys(self, channel: Channel) -> None:
        """Give each party its key, once (right after the session's first step's inputs)."""
        if not self.keys_sent:
            for name, key in zip(self.parties, self.keys):
                channel.send(name, key, KEY_TAG)
            self.keys_sent = True

    def finish(self, channel: Channel) -> None:
        """After the parties were told to stop: receive the forwarded vouchers of the last output and weigh them;
        raises the settled OutputMismatch (naming the party where its own voucher contradicts it), or one for a
        voucher that does not match a component both holders agree on."""
        if self.last is None:
            return
        raw = [channel.recv(p, VOUCHED_TAG) for p in self.parties]
        verdict = _weigh(self, raw)
        if verdict is not None:
            raise verdict


def _vouchers(raw: list, parties: tuple[str, ...], step: int) -> tuple[list[bytes], list[bytes]]:
    """(own, neighbour's) voucher of each component j: P_j's (forwarded by P_{j-1}) and P_{j-1}'s (by P_j)."""
    for name, r in zip(parties, raw):
        if not isinstance(r, bytes) or len(r) != 2 * MAC_BYTES:
            raise OutputMismatch((name,), f"{name} forwarded malformed vouchers", step)
    own = [raw[(j - 1) % 3][MAC_BYTES:] for j in range(3)]
    neighbour = [raw[j][:MAC_BYTES] for j in range(3)]
    return own, neighbour


def _weigh(check: OutputCheck, raw: list) -> OutputMismatch | None:
    """The verdict on the last output given the forwarded vouchers (None: every copy and voucher agrees). A party
    whose own voucher vouches for the other holder's copy, not for the copy it sent, is named; otherwise every pair
    under suspicion (copies that disagree, a voucher that matches neither) holds the deviating party."""
    step, names = check.steps - 1, check.parties
    mine, theirs = check.last  # type: ignore[misc]
    own, neighbour = _vouchers(raw, names, step)
    named: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for j in range(3):
        prev = (j - 1) % 3
        if mine[j] == theirs[j]:
            if not (hmac.compare_digest(own[j], _voucher(check.keys[j], step, j, mine[j]))
                    and hmac.compare_digest(neighbour[j], _voucher(check.keys[prev], step, j, mine[j]))):
                pairs.append((names[prev], names[j]))
            continue
        pairs.append((names[prev], names[j]))
        if hmac.compare_digest(own[j], _voucher(check.keys[j], step, j, theirs[j])):
            named.add(names[j])  # P_j vouched for P_{j-1}'s copy, then sent the client another
        if hmac.compare_digest(neighbour[j], _voucher(check.keys[prev], step, j, mine[j])):
            named.add(names[prev])  # P_{j-1} vouched for P_j's copy, then sent the client the digest of another
    if len(named) == 1:
        (who,) = named
        return OutputMismatch((who,), f"{who} sent the client a copy of an output component other than the one "
                              f"it vouched for to the other holder", step)
    if named:
        return OutputMismatch(tuple(sorted(named, key=names.index)), "several parties contradict their own "
                              "vouchers", step)
    return _pairs_verdict(pairs, step, names) if pairs else None


def _pairs_verdict(pairs: list[tuple[str, str]], step: int, names: tuple[str, ...]) -> OutputMismatch:
    """Pairs under suspicion with no party contradicting itself: with one deviating party, every pair holds it, so
    pairs that share exactly one party name it; a single pair is named as a pair."""
    common = set.intersection(*(set(p) for p in pairs))
    if len(common) == 1:
        (who,) = common
        return OutputMismatch((who,), f"{who} is the only party in every disagreement (it holds both components "
                              f"whose copies or vouchers disagree)", step)
    if len(common) == 2:
        a, b = sorted(common, key=names.index)
        return OutputMismatch((a, b), f"{a} and {b} sent different copies of the component they both hold, each "
                              f"consistent with its own voucher: two copies cannot tell which one deviated", step)
    return OutputMismatch(tuple(names), "every component's copies disagree: more than one party deviated", step)


def reveal_at_owner(channel: Channel, kind: type = AShare, tag: str = "output",
                    parties: tuple[str, ...] = PARTY_NAMES, check: OutputCheck | None = None) -> torch.Tensor:
    """Owner side of `reveal_to_owner`: receive each party's first component and the digest of its second, check
    that every component's copy and digest agree, and reconstruct the ring tensor. A disagreement raises
    OutputMismatch: settled (by the pairs that disagree) without a `check`, else unsettled until `check.finish`
    weighs the vouchers."""
    lo = [channel.recv(p, tag) for p in parties]
    digests = [channel.recv(p, tag + DIGEST_SUFFIX) for p in parties]
    if any(not isinstance(p, torch.Tensor) or p.shape != lo[0].shape or p.dtype != lo[0].dtype for p in lo):
        raise CommError("malformed output shares")
    step = check.steps if check is not None else 0
    for name, d in zip(parties, digests):
        if not isinstance(d, bytes) or len(d) != DIGEST_BYTES:
            raise OutputMismatch((name,), f"{name} sent a malformed digest", step)
    mine = [digest(part) for part in lo]  # component j as P_j sent it
    theirs = [digests[(j - 1) % 3] for j in range(3)]  # component j as P_{j-1} holds it
    if check is not None:
        check.last, check.steps = (mine, theirs), check.steps + 1
    bad = [j for j in range(3) if mine[j] != theirs[j]]
    if bad:
        verdict = _pairs_verdict([(parties[(j - 1) % 3], parties[j]) for j in bad], step, parties)
        if check is None:
            raise verdict
        raise OutputMismatch(verdict.parties, verdict.detail, step, settled=False)
    lo = [part.to(lo[0].device) for part in lo]
    if kind is BShare:
        return lo[0] ^ lo[1] ^ lo[2]
    return lo[0] + lo[1] + lo[2]
