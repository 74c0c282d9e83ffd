"""Checking a session's open request before anything runs: the caller's role, the committee, the model, the output,
the profile, the fixed point and the execution strategy; and the shapes of the weights an owner publishes.

Roles. Publishing needs an owner certificate. Inference (encode, decode) takes a client certificate or an owner's:
an owner may run requests, e.g. to test the models it publishes, and learns from them only what any client would.
Every other role (a node's certificate) is PERMISSION_DENIED.

Operators. A secret session (publish or inference) runs only on a committee of three distinct operators, as the
CA names them in the certificates of this node and of the other two nodes' records in this node's membership table;
two members of one operator are PERMISSION_DENIED.

Owners. A model id is OWNER/NAME: an owner publishes only under its own certificate name, with its signature over
the record this node will make of the model (secureinfer/net/owners.py); a session is served only for a model whose
record still carries a valid signature of its owner. Either refusal is PERMISSION_DENIED.

Weights. A secure committee holds a model as secret shares, or (published with `public_weights`, open models only)
in the clear at every party. A request asks for public weights with `SecureStrategy(public_weights=True)`; on a
committee holding shares (a closed model, or one published as shares) that is INVALID_ARGUMENT.

Size. A published model's weights must fit the node's `max_model_bytes` (judged from its config, before any weight
arrives); each weight is then checked against the config's shapes as it arrives (nodes/publishing.py).

Fixed point. The owner publishes a secure model at a precision f in [12, 24] (OpenSession.fractional_bits, 0 = 18),
and every session of that model runs at f. A request naming another f (a SecureStrategy's frac_bits, or a non-zero
fractional_bits) is INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
import re

import torch

from secureinfer import strategy
from secureinfer.models.config import ModelConfig, optional_parameter_shapes, parameter_shapes
from secureinfer.models.requests import DECODE_OUTPUTS, ENCODE_OUTPUTS, RequestError
from secureinfer.mpc.approx import profile as approx_profile
from secureinfer.net import owners
from secureinfer.net.certs import PeerCert
from secureinfer.net.errors import BadRequest, Unauthorized
from secureinfer.net.membership import hosted_frac_bits, record_operator
from secureinfer.net.wire import config_from_json
from secureinfer.plaintext import serving as plain_serving
from secureinfer.v1 import node_pb2

from .sessions import NodeRuntime
from .store import Hosted, published_record

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def check_open(runtime: NodeRuntime, request: node_pb2.OpenSession, caller: PeerCert) -> None:
    """Raise a NodeError unless this node may serve `request` from `caller` (nothing is run yet)."""
    if not _SESSION_ID.match(request.session_id):
        raise BadRequest("session_id must be 16-128 characters of [A-Za-z0-9_-]")
    if request.task not in (node_pb2.TASK_PUBLISH, node_pb2.TASK_ENCODE, node_pb2.TASK_DECODE):
        raise BadRequest(f"unknown task {request.task}")
    if request.privacy not in (node_pb2.PRIVACY_SECRET, node_pb2.PRIVACY_PUBLIC):
        raise BadRequest("privacy must be PRIVACY_SECRET or PRIVACY_PUBLIC")
    if not _MODEL_ID.match(request.model_id):
        raise BadRequest("model_id must be 1-128 characters of [A-Za-z0-9._/-], starting with a letter or digit")
    allowed = ("owner",) if request.task == node_pb2.TASK_PUBLISH else ("client", "owner")  # module docstring
    if caller.role not in allowed:
        raise Unauthorized(f"{caller.name} has role {caller.role!r}; this task needs a certificate with the role "
                           f"{' or '.join(repr(r) for r in allowed)}")
    secret = request.privacy == node_pb2.PRIVACY_SECRET
    _check_committee(runtime, request, secret)
    if secret:
        check_operators(runtime, request.committee)
    if request.task == node_pb2.TASK_PUBLISH:
        _check_publish(runtime, request, caller, secret)
    else:
        _check_inference(runtime, request, secret)


def _check_committee(runtime: NodeRuntime, request: node_pb2.OpenSession, secret: bool) -> None:
    """BadRequest unless this node has the session's role and is the party it is named as in a well-formed
    committee (three distinct nodes for a secret session, one for a public one)."""
    role = "secure" if secret else "plaintext"
    if role not in runtime.roles:
        raise BadRequest(f"node {runtime.node_id} has no {role!r} role (roles: {', '.join(runtime.roles)})")
    committee, size = request.committee, (3 if secret else 1)
    if len(committee.node_ids) != size or len(committee.addresses) != size:
        raise BadRequest(f"a {'secret' if secret else 'public'} session needs a committee of {size} nodes")
    if len(set(committee.node_ids)) != size or not committee.committee_id:
        raise BadRequest("committee nodes must be distinct and the committee must have an id")
    if request.party_index >= size or committee.node_ids[request.party_index] != runtime.node_id:
        raise BadRequest(f"this node ({runtime.node_id}) is not party {request.party_index} of the committee")


def check_operators(runtime: NodeRuntime, committee: node_pb2.Committee) -> None:
    """Unauthorized unless the nodes of a secret committee that this node can see are run by distinct operators, as
    the CA names them in this node's certificate and in the certificates of its peers' live records in its membership
    table. A peer without such a record is not judged here: the session links only with peers its table holds
    (peering.py), and a peer that stays unknown fails the session as unavailable (a dead node, retried elsewhere)."""
    known = {runtime.node_id: runtime.identity.operator}
    for node_id in committee.node_ids:
        record = runtime.peers.get(node_id) if runtime.peers is not None and node_id != runtime.node_id else None
        if record is not None:
            known[node_id] = record_operator(record)
    operators = list(known.values())
    if not all(operators) or len(set(operators)) != len(operators):
        runs = ", ".join(f"{node_id} ({known[node_id] or 'no operator'})" for node_id in committee.node_ids
                         if node_id in known)
        raise Unauthorized(f"committee {committee.committee_id!r} is not run by three distinct operators: {runs}; "
                           "one operator running two parties would hold two of the three shares")


def model_bytes(cfg: ModelConfig, secret: bool) -> int:
    """The memory a hosted model's weights take on this node: 16 bytes per parameter for a secure committee (two
    ring components of a share, or open weights beside their ring encoding), 8 on a plaintext worker (float64)."""
    count = sum(math.prod(shape) for shape in {**optional_parameter_shapes(cfg), **parameter_shapes(cfg)}.values())
    return count * (16 if secret else 8)


def _check_publish(runtime: NodeRuntime, request: node_pb2.OpenSession, caller: PeerCert, secret: bool) -> None:
    """BadRequest unless a publish request has no strategy, a valid precision and weight mode and a model config
    whose weights fit this node, and Unauthorized if another owner's model of that id lives on this committee."""
    if request.strategy_json:
        raise BadRequest("publishing takes no execution strategy")
    _check_publish_bits(request, secret)
    if request.public_weights and not secret:
        raise BadRequest("public_weights publishes an open model's weights in the clear to a secure committee of "
                         "three; a plaintext worker holds every model in the clear already (leave it unset)")
    size = model_bytes(config_from_json(request.model_config_json), secret)
    if size > runtime.max_model_bytes:
        raise BadRequest(f"this model's weights would take {size} bytes here, over this node's limit of "
                         f"{runtime.max_model_bytes} (max_model_bytes)")
    runtime.store.check_replace(request.model_id, request.committee.committee_id, caller.name)
    runtime.store.check_room(request.model_id, request.committee.committee_id)
    _check_owner_seal(runtime, request, caller)


def _check_owner_seal(runtime: NodeRuntime, request: node_pb2.OpenSession, caller: PeerCert) -> None:
    """Unauthorized unless the model id is in the caller's namespace (OWNER/NAME with the caller as OWNER) and the
    request carries the caller's valid signature over the record this node would make of it."""
    try:
        owner, _ = owners.split_model_id(request.model_id)
    except owners.OwnerError as exc:
        raise Unauthorized(f"{exc}: {caller.name} publishes as '{caller.name}{owners.SEPARATOR}NAME'") from None
    if owner != caller.name:
        raise Unauthorized(f"{caller.name} cannot publish {request.model_id!r}: that id is in {owner!r}'s namespace")
    try:
        owners.verify(published_record(request), runtime.identity.ca_pem)
    except owners.OwnerError as exc:
        raise Unauthorized(f"the owner's statement does not verify: {exc}") from None


def _check_served_owner(runtime: NodeRuntime, hosted: Hosted) -> None:
    """Unauthorized unless the hosted model's record still carries a valid signature by its owner (a session is
    served only for a model whose owner's statement verifies)."""
    try:
        owners.verify(hosted.record, runtime.identity.ca_pem)
    except owners.OwnerError as exc:
        raise Unauthorized(f"this node does not serve {hosted.record.model_id!r}: {exc}") from None


def _check_publish_bits(request: node_pb2.OpenSession, secret: bool) -> None:
    """BadRequest unless a publish request's fixed point is 0 (the default) or, for a secure committee, in range."""
    if not request.fractional_bits:
        return
    if not secret:
        raise BadRequest("a plaintext worker holds open weights in floating point: leave fractional_bits unset")
    try:
        strategy.check_frac_bits(request.fractional_bits)
    except strategy.StrategyError as exc:
        raise BadRequest(f"bad fractional_bits: {exc}") from exc


def _check_inference(runtime: NodeRuntime, request: node_pb2.OpenSession, secret: bool) -> None:
    """BadRequest unless an inference request fits the model this committee hosts: its members, precision, task,
    output, profile and strategy."""
    committee = request.committee
    if request.public_weights:
        raise BadRequest("public_weights is for publishing; a request asks for public weights with "
                         "SecureStrategy(public_weights=True) in strategy_json")
    try:
        approx_profile.get(request.profile or "accurate")
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    hosted = runtime.store.get(request.model_id, committee.committee_id, request.privacy)
    _check_served_owner(runtime, hosted)
    if list(committee.node_ids) != list(hosted.record.node_ids) or request.party_index != hosted.record.party_index:
        # Only the nodes that hold the other shares may take part: anyone else would learn from this party's messages.
        raise BadRequest(f"committee {committee.committee_id!r} is {list(hosted.record.node_ids)} with this node as "
                         f"party {hosted.record.party_index}; the request names other members")
    held = hosted_frac_bits(hosted.record)
    if secret and request.fractional_bits not in (0, held):
        raise BadRequest(f"the request asks for frac_bits={request.fractional_bits} (fractional_bits), but "
                         f"committee {committee.committee_id!r} holds {request.model_id!r} at frac_bits={held} (its "
                         f"weights are encoded at that precision)")
    cfg = hosted.cfg
    if cfg.causal != (request.task == node_pb2.TASK_DECODE):
        raise BadRequest(f"model {request.model_id!r} is {'a decoder' if cfg.causal else 'an encoder'}: "
                         f"use TASK_{'DECODE' if cfg.causal else 'ENCODE'}")
    allowed = DECODE_OUTPUTS if cfg.causal else ENCODE_OUTPUTS
    if output_of(request, cfg) not in allowed:
        raise BadRequest(f"unknown output {request.output!r} for {cfg.arch}; choose from {', '.join(allowed)}")
    _check_strategy(runtime, request, hosted)


def request_strategy(request: node_pb2.OpenSession) -> strategy.Strategy | None:
    """The request's execution strategy, or None for the node's default; BadRequest if malformed."""
    if not request.strategy_json:
        return None
    try:
        return strategy.from_json(request.strategy_json)
    except strategy.StrategyError as exc:
        raise BadRequest(f"bad strategy_json: {exc}") from exc


def output_of(request: node_pb2.OpenSession, cfg: ModelConfig) -> str:
    """The requested output, or the model's default (decoders: the last position; encoders: the embedding)."""
    return request.output or ("last" if cfg.causal else "embedding")


def _check_strategy(runtime: NodeRuntime, request: node_pb2.OpenSession, hosted: Hosted) -> None:
    """BadRequest unless the request's strategy (if any) fits its session: `strategy.misfit` on how this committee
    hosts the model, and around it the rules only a node knows (session kind, profile, output, worker)."""
    chosen = request_strategy(request)
    if chosen is None:
        return
    secret = request.privacy == node_pb2.PRIVACY_SECRET
    if not secret and not isinstance(chosen, strategy.PlaintextStrategy):
        raise BadRequest(f"a public session runs in the clear on one worker: give a PlaintextStrategy, not "
                         f"{chosen.name}")
    open_model = not secret or hosted.record.public_weights  # as far as this node knows: shares may hide an open one
    reason = strategy.misfit(chosen, secret_prompt=secret, open_model=open_model,
                             hosting=_hosting(runtime, request, hosted))
    if reason is not None:
        raise BadRequest(f"strategy {chosen.name} does not fit this {'secret' if secret else 'public'} session: "
                         f"committee {hosted.record.committee_id!r} holds {hosted.record.model_id!r} "
                         f"{_holding(hosted)}; {reason}")
    if isinstance(chosen, strategy.PlaintextStrategy):  # a public session (a secret one never runs in plaintext)
        try:
            plain_serving.check_strategy(hosted.cfg, chosen, runtime.device)
        except RequestError as exc:
            raise BadRequest(str(exc)) from exc
        return
    if request.profile and request.profile != chosen.profile:
        raise BadRequest(f"profile {request.profile!r} contradicts the strategy's {chosen.profile!r}")
    if chosen.batch_requests and output_of(request, hosted.cfg) == "logits" and not hosted.cfg.num_labels:
        raise BadRequest(f"model {request.model_id!r} has no classification head")


def _hosting(runtime: NodeRuntime, request: node_pb2.OpenSession, hosted: Hosted) -> strategy.Hosting:
    """Where the request would run, for `strategy.misfit`: this committee, this node's device, and for a secure
    committee the precision and weight mode it holds the model at and whether this node batches requests (its
    batcher runs secure steps only: a plaintext worker's strategy is checked by plain_serving.check_strategy)."""
    node_ids, device = tuple(request.committee.node_ids), (runtime.device,)
    if request.privacy != node_pb2.PRIVACY_SECRET:  # a plaintext worker holds the open model in the clear
        return strategy.Hosting(secure=False, node_ids=node_ids, devices=device, public_weights=True)
    return strategy.Hosting(secure=True, node_ids=node_ids, devices=device, frac_bits=hosted_frac_bits(hosted.record),
                            public_weights=hosted.record.public_weights, batching=runtime.batcher is not None)


def _holding(hosted: Hosted) -> str:
    """How this committee holds the model, for a refusal's message."""
    if hosted.record.privacy != node_pb2.PRIVACY_SECRET:
        return "in the clear on this plaintext worker"
    weights = "with public weights" if hosted.record.public_weights else "as secret shares"
    return f"{weights} at frac_bits={hosted_frac_bits(hosted.record)}"


def check_shapes(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise BadRequest unless the published shares have exactly the architecture's parameter shapes."""
    required, optional = parameter_shapes(cfg), optional_parameter_shapes(cfg)
    missing = sorted(set(required) - set(shapes))
    unknown = sorted(set(shapes) - set(required) - set(optional))
    if missing or unknown:
        raise BadRequest(f"published parameters do not fit {cfg.arch}: missing {missing[:3]}, unknown {unknown[:3]}")
    for name, shape in shapes.items():
        expected = required.get(name, optional.get(name))
        if shape != expected:
            raise BadRequest(f"parameter {name} has shape {shape}, expected {expected}")


def check_public(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published open weights as float64, or BadRequest unless they have the architecture's exact shapes and
    finite values."""
    check_shapes(cfg, {k: tuple(v.shape) for k, v in params.items()})
    out = {}
    for name, value in params.items():
        value = value.to(torch.float64)
        if not bool(torch.isfinite(value).all()):
            raise BadRequest(f"published parameter {name} holds non-finite values")
        out[name] = value
    return out
