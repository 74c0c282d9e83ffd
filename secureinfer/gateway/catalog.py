"""The network's hosted models as the gateway lists them (`GET /v1/models`): for each model its architecture, the
privacy modes a whole committee or worker serves it in right now, and every committee that holds it, whole or not.

Everything comes from one membership view (signed node records, verified by the SDK against the network CA). A model
is listed by its full id OWNER/NAME, and only from records that carry a valid signature of that owner (the SDK's
check, secureinfer/net/owners.py): `owned_by` is that owner. A bare NAME finds the one owner's model of that name.
"""

from __future__ import annotations

from dataclasses import dataclass

from secureinfer.client import InvalidRequest
from secureinfer.models.config import ModelConfig
from secureinfer.net.errors import BadRequest
from secureinfer.net.membership import hosted_frac_bits
from secureinfer.net.owners import OwnedTable, OwnerError, split_model_id
from secureinfer.net.wire import config_from_json
from secureinfer.v1 import node_pb2

MODES = {node_pb2.PRIVACY_SECRET: "secret", node_pb2.PRIVACY_PUBLIC: "public"}


@dataclass(frozen=True)
class Placement:
    """A committee of three secure nodes (secret) or one plaintext worker (public) holding a model; `up` when every
    member's live record still lists it."""

    committee_id: str
    mode: str
    node_ids: tuple[str, ...]
    up: bool
    public_weights: bool = False
    frac_bits: int = 0


@dataclass(frozen=True)
class HostedModel:
    """A model some live node hosts under its owner's valid signature."""

    model_id: str  # OWNER/NAME
    config: ModelConfig | None  # None: no record carried a config that parses
    modes: tuple[str, ...]  # the privacy modes a whole placement serves it in now ("secret", "public")
    placements: tuple[Placement, ...]
    owner: str = ""  # the owner certificate whose signature its records carry (the id's OWNER)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The OpenAI endpoints that serve it: decoders generate, encoders embed."""
        if self.config is None:
            return ()
        return ("chat/completions", "completions") if self.config.causal else ("embeddings",)

    def as_openai(self) -> dict[str, object]:
        """The model object of `GET /v1/models`, with secureinfer's fields beside OpenAI's."""
        cfg = self.config
        return {
            "id": self.model_id, "object": "model", "created": 0, "owned_by": self.owner,
            "modes": list(self.modes), "endpoints": list(self.endpoints),
            "arch": cfg.arch if cfg else None, "context_length": cfg.max_positions if cfg else None,
            "tokenizer": (cfg.tokenizer or None) if cfg else None,
            "committees": [{"id": p.committee_id, "mode": p.mode, "nodes": list(p.node_ids), "up": p.up,
                            "public_weights": p.public_weights, **({"frac_bits": p.frac_bits} if p.frac_bits else {})}
                           for p in self.placements],
        }


def hosted_models(table: OwnedTable) -> list[HostedModel]:
    """Every model a live record lists under its owner's valid signature, by id."""
    live = table.live()
    names = sorted({h.model_id for r in live for h in r.models if table.owner_problem(h) is None})
    return [_hosted(table, live, name) for name in names]


def find(table: OwnedTable, model_id: str) -> HostedModel | None:
    """The hosted model `model_id` (OWNER/NAME, or a bare NAME one owner publishes), or None when no live record
    lists it under its owner's valid signature; InvalidRequest for a bare NAME several owners publish."""
    try:
        model_id = table.resolve(model_id)
    except OwnerError as exc:
        raise InvalidRequest(str(exc)) from None
    live = table.live()
    if not any(h.model_id == model_id and table.owner_problem(h) is None for r in live for h in r.models):
        return None
    return _hosted(table, live, model_id)


def _hosted(table: OwnedTable, live: list[node_pb2.NodeRecord], model_id: str) -> HostedModel:
    modes = tuple(m for code, m in MODES.items() if any(v.privacy == code for v in table.choose_committees(model_id)))
    return HostedModel(model_id, _config(table, model_id), modes, _placements(table, live, model_id),
                       owner=split_model_id(model_id)[0])


def _config(table: OwnedTable, model_id: str) -> ModelConfig | None:
    config_json = table.verified_config(model_id)
    try:
        return config_from_json(config_json) if config_json is not None else None
    except BadRequest:
        return None


def _placements(table: OwnedTable, live: list[node_pb2.NodeRecord], model_id: str) -> tuple[Placement, ...]:
    """Each committee or worker the live records name for `model_id` under its owner's valid signature, up when all
    its members list it."""
    claims: dict[tuple[str, tuple[str, ...]], tuple[node_pb2.HostedModel, set[str]]] = {}
    for record in live:
        for hosted in record.models:
            if hosted.model_id != model_id or hosted.privacy not in MODES or table.owner_problem(hosted) is not None:
                continue
            members = tuple(hosted.node_ids) or (record.node_id,)
            _, listed = claims.setdefault((hosted.committee_id, members), (hosted, set()))
            listed.add(record.node_id)
    healthy = {r.node_id for r in live if r.healthy}
    out = []
    for (committee_id, members), (hosted, listed) in sorted(claims.items()):
        secret = hosted.privacy == node_pb2.PRIVACY_SECRET
        out.append(Placement(committee_id, MODES[hosted.privacy], members,
                             up=set(members) <= (listed & healthy), public_weights=secret and hosted.public_weights,
                             frac_bits=hosted_frac_bits(hosted) if secret else 0))
    return tuple(out)
