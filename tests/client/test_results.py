"""What requests return: a PlannedTensor works as a plain tensor in every operation and keeps its plan through copies
and pickles; a Generated carries tokens, logits, the plan and the decoded text."""

from __future__ import annotations

import copy
import io
import pickle

import torch

from secureinfer.client import Generated, PlannedTensor, ServedPlan
from secureinfer.client.results import planned
from secureinfer.net.membership import CommitteeView
from secureinfer.strategy import SecureStrategy
from secureinfer.v1 import node_pb2

PLAN = ServedPlan("secure", "c1", ("n0", "n1", "n2"), SecureStrategy(), auto=True, predicted_s=0.5)


def test_a_planned_tensor_is_a_plain_tensor_to_torch_and_keeps_its_plan() -> None:
    value = torch.randn(2, 3, dtype=torch.float64)
    out = planned(value, PLAN)
    assert isinstance(out, torch.Tensor) and isinstance(out, PlannedTensor) and out.plan == PLAN
    assert torch.equal(out, value) and out.data_ptr() == value.data_ptr()  # no copy
    for derived in (out - value, out * 2, out[0], out.argmax(-1), torch.cat([out, value]), out.abs().max()):
        assert type(derived) is torch.Tensor
    assert torch.nn.functional.cosine_similarity(out, value, dim=-1).min() > 0.999
    for kept in (copy.deepcopy(out), pickle.loads(pickle.dumps(out))):
        assert isinstance(kept, PlannedTensor) and kept.plan == PLAN and torch.equal(kept, value)
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False).plan == PLAN


def test_an_explicit_plan_names_the_nodes_default() -> None:
    view = CommitteeView("c1", ("n0", "n1", "n2"), ("a:1", "b:1", "c:1"), node_pb2.PRIVACY_SECRET)
    worker = CommitteeView("w1", ("n0",), ("a:1",), node_pb2.PRIVACY_PUBLIC)
    assert ServedPlan.explicit(view, None, "fast") == ServedPlan("secure", "c1", view.node_ids, None, profile="fast")
    assert ServedPlan.explicit(view, SecureStrategy(), "accurate").profile == ""  # the strategy carries its profile
    assert ServedPlan.explicit(worker, None, "accurate") == ServedPlan("plaintext", "w1", ("n0",), None)


def test_a_generation_carries_its_plan_and_text() -> None:
    got = Generated(tokens=torch.tensor([[3, 4]]), logits=torch.zeros(2, 1, 5), plan=PLAN, text="hi")
    assert got.plan.auto and got.text == "hi" and got.tokens.shape == (1, 2)
    assert Generated(tokens=got.tokens, logits=got.logits, plan=PLAN).text is None
