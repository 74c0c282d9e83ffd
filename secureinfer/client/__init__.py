"""The SDK: `Client` (embed, classify, logits, generate, stream) and `ModelOwner` (publish), over a network of nodes.

    from secureinfer.client import Client, ModelOwner, selector_from_network

    with ModelOwner.from_dir("certs", "owner", seeds=["127.0.0.1:7001"]) as owner:
        owner.publish("minilm", cfg, params, tokenizer="all-MiniLM-L6-v2")  # secret shares to three nodes
    with Client.from_dir("certs", "alice", seeds=["127.0.0.1:7001"]) as client:
        emb = client.embed("minilm", ["a sentence"])        # only this process sees the text and the output
        emb.plan                                             # the plan that served it: mode, nodes, strategy
        client.use_selector(selector_from_network(client))  # from now on, strategy="auto": the selector plans

  api.py         Client: inference requests on text or token ids, on a committee it names or on those hosting the model
  owner.py       ModelOwner: publishing models to committees of secure nodes or to plaintext workers
  member.py      what both share: identity, connector, membership view, committee and model-config lookup
  text.py        the tokenizer of a request's text (named at publish time or per request), encoding and decoding
  results.py     what requests return: ServedPlan, PlannedTensor (a tensor with `.plan`), Generated
  errors.py      the SDK's errors, one hierarchy under ClientError, each with its gRPC status code
  failover.py    the one committee retry loop: the next placement after a retryable failure, never a failed one
  auto.py        strategy="auto": plans from a selector, checked, run and recorded; selector_from_network
  connection.py  mutual-TLS channels to nodes, sessions as engine Channels, cancelling a session from another thread
  records.py     performance records pushed to and pulled from nodes, round trips to nodes

The SDK speaks to nodes only through `secureinfer.net`; it imports no module of the daemon.
"""

from __future__ import annotations

from .api import Client
from .auto import selector_from_network
from .errors import (Cancelled, ClientError, InvalidRequest, ModelNotFound, NetworkError, NotEnoughNodes,
                     OutputMismatch, RequestFailed)
from .owner import ModelOwner
from .results import Generated, PlannedTensor, ServedPlan

__all__ = ["Cancelled", "Client", "ClientError", "Generated", "InvalidRequest", "ModelNotFound", "ModelOwner",
           "NetworkError", "NotEnoughNodes", "OutputMismatch", "PlannedTensor", "RequestFailed", "ServedPlan", "selector_from_network"]
