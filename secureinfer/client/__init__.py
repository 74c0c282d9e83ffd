"""The SDK: `Client` (embed, classify, logits, generate, stream) and `ModelOwner` (publish), over a network of nodes.

    from secureinfer.client import Client, ModelOwner, selector_from_network

    with ModelOwner.from_dir("certs", "owner", seeds=["127.0.0.1:7001"]) as owner:
        owner.publish("minilm", cfg, params)                    # secret shares to a committee of three nodes
    with Client.from_dir("certs", "alice", seeds=["127.0.0.1:7001"]) as client:
        emb = client.embed("minilm", input_ids, attention_mask) # only this process sees the tokens and the output
        client.use_selector(selector_from_network(client))      # from now on, strategy="auto": the selector plans

  api.py         Client: inference requests, on a committee it names or, in turn, on those hosting the model
  owner.py       ModelOwner: publishing models to committees of secure nodes or to plaintext workers
  member.py      what both share: identity, connector, membership view, committee and model-config lookup
  failover.py    the one committee retry loop: the next placement after a retryable failure, never a failed one
  auto.py        strategy="auto": plans from a selector, checked, run and recorded; selector_from_network
  connection.py  mutual-TLS channels to nodes, sessions as engine Channels, NetworkError and RequestFailed
  records.py     performance records pushed to and pulled from nodes, round trips to nodes

The SDK speaks to nodes only through `secureinfer.net`; it imports no module of the daemon.
"""

from __future__ import annotations

from .api import Client
from .auto import selector_from_network
from .connection import NetworkError, RequestFailed
from .owner import ModelOwner

__all__ = ["Client", "ModelOwner", "NetworkError", "RequestFailed", "selector_from_network"]
