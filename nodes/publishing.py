"""Publishing a model to this node: receive the owner's weights (secret shares, or an open model's weights in the
clear), check their shapes, build the model and store it with the record the network sees.

A secure committee's owner publishes at a precision f (OpenSession.fractional_bits, 0 = 18): the shares arrive
encoded at f, public weights are encoded here at f, and the hosted record advertises it.
"""

from __future__ import annotations

from typing import Any

import torch

from secureinfer.models import checkpoint
from secureinfer.mpc.approx import profile as approx_profile
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.models.session import release_memory
from secureinfer.mpc.party import Party
from secureinfer.mpc.runtime import OWNER
from secureinfer.net.wire import config_from_json, config_to_json
from secureinfer.v1 import node_pb2

from .opening import check_public, check_shapes
from .sessions import NodeSession
from .store import Hosted, public_model


def publish(session: NodeSession) -> int:
    """Receive and store the model a publish session carries (its worker thread); returns how many models this node
    hosts now."""
    request = session.request
    cfg = config_from_json(request.model_config_json)
    record = node_pb2.HostedModel(model_id=request.model_id, committee_id=request.committee.committee_id,
                                  node_ids=list(request.committee.node_ids), party_index=session.index,
                                  privacy=request.privacy, arch=cfg.arch, config_json=config_to_json(cfg),
                                  public_weights=request.public_weights,
                                  frac_bits=session.frac_bits if session.secret else 0)
    open_params = None
    if session.secret and request.public_weights:  # an open model's (folded) parameters, in the clear
        open_params = check_public(cfg, weights.receive_public(session.channel, OWNER))
        model: Any = serving.build_model(cfg, dict(open_params), approx_profile.ACCURATE,
                                         config=session.engine_config())
        release_memory()
    elif session.secret:
        party = Party.receiver(session.index, session.channel, session.engine_config())
        shares = weights.receive(party, OWNER)
        check_shapes(cfg, {k: tuple(v.shape) for k, v in shares.items()})
        model = serving.build_model(cfg, shares, approx_profile.ACCURATE)
        release_memory()
    else:
        params = checkpoint.check_parameters(cfg, weights.receive_public(session.channel, OWNER), torch.float64)
        model = public_model(cfg, params, session.runtime.device)
    session.runtime.store.put(Hosted(record, cfg, model, owner=session.caller.name, open_params=open_params))
    session.channel.send(OWNER, b"stored", "stored")
    return len(session.runtime.store)
