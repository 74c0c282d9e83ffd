"""What a request returns: its value and the plan that served it (mode, placement, strategy), whichever way the plan
was made (an explicit request, or strategy="auto").

    out = client.embed("minilm", ["a text"])     # a torch.Tensor: arithmetic works as on any tensor
    out.plan.node_ids, out.plan.strategy          # ...and it says where and how it ran
    gen = client.generate("smollm2", "Hi", 8)    # Generated: tokens, logits, text (for a text prompt), plan
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from secureinfer.mpc.models.serving import Generation
from secureinfer.net.membership import CommitteeView
from secureinfer.strategy import Strategy
from secureinfer.v1 import node_pb2


@dataclass(frozen=True)
class ServedPlan:
    """The plan that served a request: its mode ("secure" on a committee of three, "plaintext" on one worker), the
    committee (or worker) and its nodes in party order, and the strategy the nodes executed.

    `strategy` None: the nodes' default for the request (secure: approximation profile `profile` at the committee's
    fixed point, public weights where the committee holds them; plaintext: the worker's float64 reference forward).
    `auto`: a selector chose the plan (strategy="auto"); `no_history`: that selector was built from zero performance
    records, so its ranking is the cost model's (and what it observed since), not measured history."""

    mode: str
    committee_id: str
    node_ids: tuple[str, ...]
    strategy: Strategy | None
    profile: str = ""
    auto: bool = False
    no_history: bool = False
    predicted_s: float | None = None  # the selector's expected latency (auto only)

    @classmethod
    def explicit(cls, view: CommitteeView, strategy: Strategy | None, profile: str) -> "ServedPlan":
        """The plan of a request that named its strategy (or none) and ran on `view`."""
        secure = view.privacy == node_pb2.PRIVACY_SECRET
        return cls(mode="secure" if secure else "plaintext", committee_id=view.committee_id, node_ids=view.node_ids,
                   strategy=strategy, profile=profile if secure and strategy is None else "")


class PlannedTensor(torch.Tensor):
    """A result tensor that also says which plan served it (`.plan`). Every torch operation treats it as a plain
    tensor and returns plain tensors (torch function dispatch is disabled for this subclass); copies and pickles
    keep the plan."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    plan: ServedPlan

    def __deepcopy__(self, memo: dict[int, Any]) -> "PlannedTensor":
        return planned(self.as_subclass(torch.Tensor).clone(), self.plan)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return planned, (self.as_subclass(torch.Tensor), self.plan)


def planned(value: torch.Tensor, plan: ServedPlan) -> PlannedTensor:
    """`value` (no copy) as a PlannedTensor carrying `plan`."""
    out = value.as_subclass(PlannedTensor)
    out.plan = plan
    return out


@dataclass(frozen=True)
class Generated(Generation):
    """A generation: new token ids (B, n), the logits each was sampled from (n, B, V), the plan that served it,
    and, for a text prompt, the new tokens decoded to text (up to the first end-of-sequence token)."""

    plan: ServedPlan
    text: str | None = None
