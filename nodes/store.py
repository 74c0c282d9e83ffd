"""The models a node hosts: secret weight shares it holds as one party of a committee, an open model's weights in the
clear as one party of a public-weights committee, or open models in the clear on a plaintext worker."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.net import owners
from secureinfer.net.errors import BadRequest, Unauthorized, UnknownModel
from secureinfer.plaintext.serving import PublicModel
from secureinfer.v1 import node_pb2


@dataclass
class Hosted:
    """One hosted model: what the network may know of it (`record`) and what this node computes with (`model`)."""

    record: node_pb2.HostedModel
    cfg: ModelConfig
    model: Any  # a built secure model on this party's shares or on public weights, or a PublicModel
    owner: str = ""  # the certificate name that published it: only it may replace it
    open_params: dict[str, torch.Tensor] | None = None  # public-weights committees: the owner's (folded) parameters


class ModelStore:
    """Hosted models keyed by (model_id, committee_id); thread-safe."""

    def __init__(self, max_models: int = 16) -> None:
        self.max_models = max_models
        self._models: dict[tuple[str, str], Hosted] = {}
        self._lock = threading.Lock()

    def check_replace(self, model_id: str, committee_id: str, owner: str) -> None:
        """Raise Unauthorized if another owner already published this model to this committee."""
        with self._lock:
            existing = self._models.get((model_id, committee_id))
        if existing is not None and existing.owner != owner:
            raise Unauthorized(f"model {model_id!r} of committee {committee_id!r} belongs to another owner")

    def check_room(self, model_id: str, committee_id: str) -> None:
        """Raise BadRequest if this node is full and does not host this model already (it would be replaced)."""
        with self._lock:
            self._check_room((model_id, committee_id))

    def put(self, hosted: Hosted) -> None:
        key = (hosted.record.model_id, hosted.record.committee_id)
        self.check_replace(*key, hosted.owner)
        with self._lock:
            self._check_room(key)
            self._models[key] = hosted

    def _check_room(self, key: tuple[str, str]) -> None:
        """check_room, with the lock held."""
        if key not in self._models and len(self._models) >= self.max_models:
            raise BadRequest(f"this node already hosts {self.max_models} models")

    def get(self, model_id: str, committee_id: str, privacy: int) -> Hosted:
        with self._lock:
            hosted = self._models.get((model_id, committee_id))
        if hosted is None or hosted.record.privacy != privacy:
            kind = "secret" if privacy == node_pb2.PRIVACY_SECRET else "public"
            raise UnknownModel(f"model {model_id!r} is not hosted here as {kind} by committee {committee_id!r}")
        return hosted

    def records(self) -> list[node_pb2.HostedModel]:
        with self._lock:
            return [node_pb2.HostedModel.FromString(h.record.SerializeToString())
                    for h in self._models.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


def published_record(request: node_pb2.OpenSession) -> node_pb2.HostedModel:
    """The record a publish request makes on this node, with the owner's signature it carries (the fields of the
    statement in secureinfer/net/owners.py, so a node checks the signature before any weight arrives)."""
    record = owners.hosted_record(request.model_id, request.committee.committee_id, request.committee.node_ids,
                                  request.privacy, request.model_config_json, party_index=request.party_index,
                                  public_weights=request.public_weights, fractional_bits=request.fractional_bits)
    record.owner_seal.CopyFrom(request.owner_seal)
    return record


def public_model(cfg: ModelConfig, params: dict, device: str) -> PublicModel:
    """An open model's parameters on this node's device (float32 on CUDA, float64 on CPU)."""
    dtype = torch.float64 if device == "cpu" else torch.float32
    return PublicModel(cfg, {k: v.to(device, dtype) for k, v in params.items()})
