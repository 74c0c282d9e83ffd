"""What every member of a network that is not a node has: an identity, a connector to the seeds, and the membership
view those seeds give (which committees and workers host which model, and the models' public configs).

Model ids are OWNER/NAME (secureinfer/net/owners.py). A request may name a bare NAME, which stands for the one
owner's model of that name (several owners publishing it is InvalidRequest listing them), and may pin the owner it
expects with `owner=`. The view offers a committee only where every member's record of the model carries a valid
signature by the owner the id names, from this network's CA and not revoked; a model whose records all fail that is
ModelNotFound saying why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from secureinfer.models.config import ModelConfig
from secureinfer.net.certs import Identity
from secureinfer.net.crl import CRL_FILE, RevocationWatch
from secureinfer.net.membership import CommitteeView, RecordError
from secureinfer.net.owners import OwnedTable, OwnerError
from secureinfer.net.wire import config_from_json
from secureinfer.v1 import node_pb2

from .connection import Connector
from .errors import InvalidRequest, ModelNotFound

PRIVACIES = {"secret": node_pb2.PRIVACY_SECRET, "public": node_pb2.PRIVACY_PUBLIC}
DEFAULT_TIMEOUT_S = 600.0
VIEW_SETTLE_S = 10.0  # how long a request waits for a committee that the view shows only in part (gossip lag)


def privacy_code(name: str) -> int:
    """The Privacy value of "secret" or "public"; InvalidRequest (a ValueError) for anything else."""
    if name not in PRIVACIES:
        raise InvalidRequest(f"privacy must be 'secret' or 'public', got {name!r}")
    return PRIVACIES[name]


def not_hosted(model_id: str, privacy: str, hosting: Sequence[CommitteeView]) -> ModelNotFound:
    """NOT_FOUND for a model no committee or worker of `hosting` serves in the privacy asked for; when it is hosted
    in the other mode, the message names the option that reaches it (the SDK never switches modes by itself)."""
    secret = [v for v in hosting if v.privacy == node_pb2.PRIVACY_SECRET]
    public = [v for v in hosting if v.privacy == node_pb2.PRIVACY_PUBLIC]
    if privacy == "public" and secret:
        return ModelNotFound(f"no plaintext worker hosts {model_id!r}: it is hosted only on committees of three "
                             f"secure nodes, which privacy='public' never uses; ask with privacy='secret' to run it "
                             f"there")
    if privacy == "secret" and public:
        return ModelNotFound(f"no committee of secure nodes hosts {model_id!r}: it is hosted only in the clear on "
                             f"plaintext workers, which a secret prompt never reaches; ask with privacy='public' "
                             f"to run it there (the worker sees the prompt)")
    return ModelNotFound(f"no {privacy} committee hosts a model named {model_id!r} (see `secureinfer network status`)")


class Member:
    """What Client and ModelOwner share: a connector, the membership view, committee lookup."""

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float, *,
                 revoked: Callable[[bytes], bool] | None = None) -> None:
        """`revoked(certificate_pem)`: True for a certificate the network revoked (its node records and owner
        signatures are refused); None: nothing is revoked."""
        self.identity = identity
        self.revoked = revoked
        self.connector = Connector(identity, seeds, timeout_s)
        self.timeout_s = timeout_s

    @classmethod
    def from_dir(cls, certs_dir: str | Path, name: str, seeds: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                 **kwargs: Any):
        """Load the identity `name` ({name}.pem, {name}.key, ca.pem) from `certs_dir` (kwargs: e.g. a Client's
        selector). Unless kwargs name `revoked`, the CA's revocation list crl.pem in `certs_dir` (where `certs
        revoke` writes it; none: nothing revoked) is followed as it changes, only forwards (secureinfer/net/crl.py),
        and no record signed by a certificate on it enters a view, so no committee with a revoked node is used."""
        member = cls(Identity.load(Path(certs_dir), name), seeds, timeout_s, **kwargs)
        if member.revoked is None:
            member.revoked = RevocationWatch(Path(certs_dir) / CRL_FILE, member.identity.ca_pem,
                                             required=False).is_revoked_now
        return member

    def close(self) -> None:
        self.connector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def membership(self) -> OwnedTable:
        """A seed's membership view, its signed records verified here against the network CA (one Status call);
        it offers committees only for models whose owner signature verifies (module docstring)."""
        table = OwnedTable(self.identity.ca_pem, self_id="", revoked=self.revoked)
        table.merge(list(self.connector.status().records))
        return table

    def resolve(self, model: str, owner: str | None = None, *, view: OwnedTable | None = None) -> str:
        """The full id OWNER/NAME a request for `model` (OWNER/NAME, or a bare NAME) with the pinned `owner` (or
        None) means, in `view` (else a fresh one); InvalidRequest when the pin contradicts the id or several owners
        publish a bare NAME (the message lists them)."""
        try:
            return (view or self.membership()).resolve(model, owner)
        except OwnerError as exc:
            raise InvalidRequest(str(exc)) from None

    def settled_membership(self, model_id: str, settle_s: float = VIEW_SETTLE_S) -> OwnedTable:
        """A membership view for a request to `model_id`. Records spread by gossip, and a busy node's can lag behind
        (say, while it stores a large model), so a view may show a committee only in part; when no committee or
        worker hosting the model is whole but some live record names one, the view is read again for up to
        `settle_s`. A model no record names is not waited for."""
        deadline = time.monotonic() + settle_s
        while True:
            table = self.membership()
            if not _only_in_part(table, model_id) or time.monotonic() >= deadline:
                return table
            time.sleep(0.25)

    def check_members(self, committee: CommitteeView, view: OwnedTable) -> None:
        """InvalidRequest unless every node of a committee the caller names has a live record in `view` (one whose
        certificate is revoked has none there, `from_dir`) and, for a secret committee, the records name three
        distinct operators, as the view's own committees do; nothing is sent to such a committee."""
        missing = [n for n in committee.node_ids if view.get(n) is None]
        if missing:
            raise InvalidRequest(f"committee {committee.committee_id!r}: no live record of {', '.join(missing)} in "
                                 f"this client's view (unknown, expired, or its certificate is revoked); nothing "
                                 f"was sent")
        if committee.privacy == node_pb2.PRIVACY_SECRET:
            try:
                view.check_committee(committee.node_ids)
            except RecordError as exc:
                raise InvalidRequest(f"committee {committee.committee_id!r}: {exc}; nothing was sent") from None

    def check_owned(self, committee: CommitteeView, model_id: str, view: OwnedTable) -> None:
        """InvalidRequest when a member of a committee the caller names lists `model_id` there without a valid
        signature of its owner (secureinfer/net/owners.py); nothing is sent to such a committee."""
        for node_id in committee.node_ids:
            record = view.get(node_id)
            for hosted in record.models if record is not None else ():
                if hosted.model_id != model_id or hosted.committee_id != committee.committee_id:
                    continue
                problem = view.owner_problem(hosted)
                if problem is not None:
                    raise InvalidRequest(f"committee {committee.committee_id!r}: {node_id} holds {model_id!r} "
                                         f"without its owner's valid signature ({problem}); nothing was sent")

    def nodes(self) -> list[node_pb2.NodeRecord]:
        """The live node records a seed knows (signed; verified here against the network CA)."""
        return self.membership().live()

    def committees(self, model_id: str, privacy: str = "secret", *, view: OwnedTable | None = None,
                   owner: str | None = None) -> list[CommitteeView]:
        """The committees (or, public, the workers) hosting `model_id` (OWNER/NAME or a bare NAME, `owner` pinned
        or None) under a valid owner signature, fastest first (in `view`, else a fresh one)."""
        wanted = privacy_code(privacy)
        view = view or self.membership()
        full = self.resolve(model_id, owner, view=view)
        return [c for c in view.choose_committees(full) if c.privacy == wanted]

    def wait_for_model(self, model_id: str, privacy: str = "secret", timeout_s: float = 30.0, *,
                       owner: str | None = None) -> list[CommitteeView]:
        """Wait until the membership view shows a committee hosting `model_id` (records spread by gossip);
        ModelNotFound if none does within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = self.committees(model_id, privacy, owner=owner)
            if views or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not views:
            raise ModelNotFound(f"no {privacy} committee hosts {model_id!r} after {timeout_s:.0f} s")
        return views

    def model_config(self, model_id: str, *, view: OwnedTable | None = None, owner: str | None = None
                     ) -> ModelConfig:
        """The public architecture of a hosted model, from a node's record its owner's signature covers (in `view`,
        else a fresh one); ModelNotFound (NOT_FOUND) if no node hosts it, or none under a valid owner signature
        (the message says why each record was refused)."""
        view = view or self.membership()
        full = self.resolve(model_id, owner, view=view)
        config_json = view.verified_config(full)
        if config_json is not None:
            return config_from_json(config_json)
        refused = view.refusals(full)
        if refused:
            raise ModelNotFound(f"no node hosts {full!r} under a valid signature of its owner, so this client will "
                                f"not use it; refused: {'; '.join(refused[:6])}")
        raise ModelNotFound(f"no node hosts a model named {full!r} (see `secureinfer network status`)")


def _only_in_part(table: OwnedTable, model_id: str) -> bool:
    """Whether live records name a committee (or worker) hosting `model_id` under a valid owner signature while
    none is whole in `table`."""
    try:
        model_id = table.resolve(model_id)
    except OwnerError:
        return False
    named = {h.committee_id for _, h in table.claims(model_id) if table.owner_problem(h) is None}
    return bool(named) and not table.choose_committees(model_id)
