"""What every member of a network that is not a node has: an identity, a connector to the seeds, and the membership
view those seeds give (which committees and workers host which model, and the models' public configs)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secureinfer.models.config import ModelConfig
from secureinfer.net.certs import Identity
from secureinfer.net.membership import CommitteeView, MembershipTable
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

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float) -> None:
        self.identity = identity
        self.connector = Connector(identity, seeds, timeout_s)
        self.timeout_s = timeout_s

    @classmethod
    def from_dir(cls, certs_dir: str | Path, name: str, seeds: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                 **kwargs: Any):
        """Load the identity `name` ({name}.pem, {name}.key, ca.pem) from `certs_dir` (kwargs: e.g. a Client's
        selector)."""
        return cls(Identity.load(Path(certs_dir), name), seeds, timeout_s, **kwargs)

    def close(self) -> None:
        self.connector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def membership(self) -> MembershipTable:
        """A seed's membership view, its signed records verified here against the network CA (one Status call)."""
        table = MembershipTable(self.identity.ca_pem, self_id="")
        table.merge(list(self.connector.status().records))
        return table

    def settled_membership(self, model_id: str, settle_s: float = VIEW_SETTLE_S) -> MembershipTable:
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

    def nodes(self) -> list[node_pb2.NodeRecord]:
        """The live node records a seed knows (signed; verified here against the network CA)."""
        return self.membership().live()

    def committees(self, model_id: str, privacy: str = "secret", *, view: MembershipTable | None = None
                   ) -> list[CommitteeView]:
        """The committees (or, public, the workers) hosting `model_id`, fastest first (in `view`, else a fresh one)."""
        wanted = privacy_code(privacy)
        return [c for c in (view or self.membership()).choose_committees(model_id) if c.privacy == wanted]

    def wait_for_model(self, model_id: str, privacy: str = "secret", timeout_s: float = 30.0) -> list[CommitteeView]:
        """Wait until the membership view shows a committee hosting `model_id` (records spread by gossip);
        ModelNotFound if none does within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = self.committees(model_id, privacy)
            if views or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not views:
            raise ModelNotFound(f"no {privacy} committee hosts {model_id!r} after {timeout_s:.0f} s")
        return views

    def model_config(self, model_id: str, *, view: MembershipTable | None = None) -> ModelConfig:
        """The public architecture of a hosted model, from any node's record (in `view`, else a fresh one);
        ModelNotFound (NOT_FOUND) if no node hosts it."""
        for record in (view or self.membership()).live():
            for hosted in record.models:
                if hosted.model_id == model_id and hosted.config_json:
                    return config_from_json(hosted.config_json)
        raise ModelNotFound(f"no node hosts a model named {model_id!r} (see `secureinfer network status`)")


def _only_in_part(table: MembershipTable, model_id: str) -> bool:
    """Whether live records name a committee (or worker) hosting `model_id` while none is whole in `table`."""
    named = {h.committee_id for r in table.live() for h in r.models if h.model_id == model_id}
    return bool(named) and not table.choose_committees(model_id)
