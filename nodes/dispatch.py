"""Which engine program a session runs on its worker thread: publishing, a plaintext worker's public session, or a
secure party's inference (served step by step, or each step in a batch), and the secure model it computes with.

Weights. Requests on a public-weights committee run as `SecureStrategy(public_weights=True)` unless their strategy
says otherwise: with no strategy, the committee's way (public weights, since nothing is gained by hiding open
weights); with `public_weights=False`, the secret-weights protocol on the trivial sharing of the open weights
(`weights.share_public`: the same messages, rounds and bytes as on a committee holding real shares). The prompt is
secret either way (one-hot shares).

Limits. Every step's tokens are held to the node's step limits (rows, and the memory they take) before anything is
computed: a secure party's from the shapes their shares declare (serving.serve_steps), a plaintext worker's from the
ids tensor, which has arrived whole within the link's payload limit.

Fixed point. Every session of a hosted model runs with EngineConfig(fxp=FixedPoint(f)) at the precision f its weights
are encoded at (the hosted record's).
"""

from __future__ import annotations

from typing import Any

import torch

from secureinfer import strategy
from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import CLIENT
from secureinfer.mpc.approx import profile as approx_profile
from secureinfer.mpc.approx.profile import ApproxProfile
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.party import Party
from secureinfer.net.errors import BadRequest
from secureinfer.net.membership import hosted_frac_bits
from secureinfer.plaintext import serving as plain_serving
from secureinfer.v1 import node_pb2

from .opening import output_of, request_strategy
from .publishing import publish
from .sessions import NodeSession
from .store import Hosted


def run(session: NodeSession) -> Any:
    """The engine program of a session opened by a caller (its worker thread): publish, or serve an inference."""
    if session.request.task == node_pb2.TASK_PUBLISH:
        return publish(session)
    return _infer(session)


def _infer(session: NodeSession) -> Any:
    """Serve an inference session on the model its committee hosts, in the clear or as one secure party."""
    request, runtime = session.request, session.runtime
    hosted = runtime.store.get(request.model_id, request.committee.committee_id, request.privacy)
    session.frac_bits = hosted_frac_bits(hosted.record)  # the precision its weights are encoded at
    chosen = request_strategy(request)
    output = output_of(request, hosted.cfg)
    if not session.secret:
        channel = _BoundedTokens(session.channel, hosted.cfg, runtime.step_limits)
        return plain_serving.serve_public(channel, hosted.model, output, device=runtime.device, strategy=chosen)
    profile = approx_profile.get(request.profile or (chosen.profile if chosen is not None else "accurate"))
    model = secure_model(hosted, chosen, profile, session)
    if isinstance(chosen, strategy.SecureStrategy) and chosen.batch_requests:  # steps run in shared batches
        if runtime.batcher is None:  # refused when the session opened (opening.py)
            raise BadRequest(f"node {runtime.node_id} does not batch requests: drop batch_requests")
        return runtime.batcher.serve(session, model, output, profile.name)
    step, with_meta = serving.step_function(hosted.cfg, output)
    party = Party.connect(session.index, session.channel, session.engine_config(), session.key_signer())
    return serving.serve(party, model, step, with_meta, client=CLIENT, limits=runtime.step_limits)


class _BoundedTokens:
    """A public session's channel whose client token steps are held to the session's step limits (rows, and the
    memory a step of that many tokens takes) before the worker computes on them; everything else passes through."""

    def __init__(self, channel: Any, cfg: ModelConfig, limits: serving.StepLimits) -> None:
        self._channel, self._cfg, self._limits = channel, cfg, limits

    def recv(self, frm: str, tag: str = "") -> Any:
        payload = self._channel.recv(frm, tag)
        if tag == "tokens" and frm == CLIENT and isinstance(payload, torch.Tensor) and payload.dim() == 2:
            serving.check_tokens(self._cfg, (*payload.shape, self._cfg.vocab_size), None, self._limits)
        return payload

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def secure_model(hosted: Hosted, chosen: strategy.Strategy | None, profile: ApproxProfile,
                 session: NodeSession) -> Any:
    """The model a secure session computes with: the hosted one, or on a public-weights committee asked for secret
    weights, one built on the trivial sharing of the open weights (module docstring)."""
    secret_asked = isinstance(chosen, strategy.SecureStrategy) and not chosen.public_weights
    if hosted.record.public_weights and secret_asked and hosted.open_params is not None:
        shares = weights.share_public(hosted.open_params, session.index, session.engine_config())
        return serving.build_model(hosted.cfg, shares, profile)
    return serving.with_profile(hosted.model, profile)
