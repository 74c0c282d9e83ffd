"""The SDK: `Client` (embed, classify, logits, generate, stream) and `ModelOwner` (publish), over a network of nodes.

    from secureinfer.client import Client, ModelOwner

    with ModelOwner.from_dir("certs", "owner", seeds=["127.0.0.1:7001"]) as owner:
        owner.publish("minilm", cfg, params)                    # secret shares to a committee of three nodes
    with Client.from_dir("certs", "alice", seeds=["127.0.0.1:7001"]) as client:
        emb = client.embed("minilm", input_ids, attention_mask) # only this process sees the tokens and the output

  api.py         Client and ModelOwner
  connection.py  mutual-TLS channels to nodes, sessions as engine Channels, NetworkError and RequestFailed
  auto.py        strategy="auto": plans from a selector, run and recorded
  records.py     performance records pushed to and pulled from nodes, round trips to nodes

The SDK speaks to nodes only through `secureinfer.net`; it imports no module of the daemon.
"""

from __future__ import annotations

from .api import Client, ModelOwner
from .connection import NetworkError, RequestFailed

__all__ = ["Client", "ModelOwner", "NetworkError", "RequestFailed"]
