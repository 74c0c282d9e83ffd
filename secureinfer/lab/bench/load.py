"""Load and soak with faults: many concurrent secure requests from several client certificates against a local
network of real node processes (mutual TLS) while nodes are SIGKILLed and restarted.

    with LocalNetwork(SimulationConfig(n_nodes=6, max_sessions=12)) as net:
        report = run_load(net, LoadSpec(requests=40, concurrency=6, kills=1))
        print(report.summary())

A tiny random GPT-2 is published to two disjoint committees (so a request whose committee lost a node can succeed
on the other). Requests alternate between secure decoder logits and two-token greedy generation; each is checked
against the float64 plaintext model (logits within `tolerance`; a generated token must be an argmax of the plaintext
logits of its prefix up to that tolerance). A chaos thread kills a committee member (SIGKILL) after each
1/(kills+1) of the requests and restarts it with the same configuration and address; a network that keeps models
(`SimulationConfig(keep_models=True)`, what `secureinfer bench load` runs) serves them again from the node's data
directory, otherwise the model is republished to its committee (a restarted node then starts empty). A generation
whose committee dies mid-way resumes on the other committee. Every request ends in exactly one outcome: right, wrong, or failed with a
gRPC status; the report tallies failures by cause, latency percentiles, and each never-killed node's RSS and open
file descriptors before and after.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from secureinfer.client.connection import NetworkError, RequestFailed
from secureinfer.models.config import ModelConfig, parameter_shapes
from secureinfer.plaintext import reference as plaintext

MODEL_ID = "load-gpt2"
RETRY_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")  # the driver tries such a request again (the SDK already did)
Log = Callable[[str], None]


class LoadError(RuntimeError):
    """The load run could not be set up or did not finish."""


@dataclass(frozen=True)
class LoadSpec:
    """How much load: requests, how many in flight, client identities, node kills, per-request deadline."""

    requests: int = 40
    concurrency: int = 6
    clients: int = 3
    kills: int = 1
    deadline_s: float = 60.0  # each request (all its attempts) must end within this
    attempts: int = 3  # per request, for UNAVAILABLE / RESOURCE_EXHAUSTED
    downtime_s: float = 1.0  # how long a killed node stays down
    prompt_len: int = 4
    new_tokens: int = 2
    tolerance: float = 3e-3  # |secure - plaintext| logits, accurate profile (as in tests/e2e)
    generate_every: int = 2  # every n-th request generates new_tokens tokens, the others ask for logits; 0: none
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("requests", "concurrency", "clients", "attempts", "prompt_len", "new_tokens"):
            if getattr(self, name) < 1:
                raise LoadError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kills < 0 or self.deadline_s <= 0 or self.downtime_s < 0 or self.tolerance <= 0:
            raise LoadError("kills and downtime_s must be >= 0, deadline_s and tolerance > 0")


@dataclass(frozen=True)
class Outcome:
    """How one request ended: status "OK" (then `correct` says whether the answer matched) or a gRPC status name /
    error type, its last message, its latency over all attempts, and how many attempts it took."""

    index: int
    client: str
    kind: str
    status: str
    correct: bool
    seconds: float
    attempts: int
    message: str = ""


@dataclass(frozen=True)
class Kill:
    """One fault: which node, when (seconds into the run) it was killed, restarted and its committee served again
    (from the kept shares, or republished)."""

    node: str
    killed_s: float
    restarted_s: float
    serving_s: float
    republished: bool


@dataclass
class LoadReport:
    """Everything a run measured (see `summary`)."""

    spec: LoadSpec
    outcomes: list[Outcome]
    kills: list[Kill]
    wall_s: float
    resources_before: dict[str, tuple[int, int]]  # node -> (RSS KiB, open fds), never-killed nodes
    resources_after: dict[str, tuple[int, int]]
    answers: dict[int, int] = field(default_factory=dict)  # request index -> results delivered (must all be 1)

    def causes(self) -> dict[str, int]:
        """Requests by how they ended: OK, WRONG_ANSWER, or the failure's status."""
        return dict(Counter("WRONG_ANSWER" if o.status == "OK" and not o.correct else o.status
                            for o in self.outcomes))

    def percentiles(self, ok_only: bool = True) -> dict[str, float]:
        """p50 / p90 / p99 / max latency (seconds) of the successful requests (or of all)."""
        times = sorted(o.seconds for o in self.outcomes if o.status == "OK" or not ok_only)
        if not times:
            return {}
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": times[-1]}

    def summary(self) -> str:
        """A few lines: requests, outcomes by cause, latency percentiles, kills, node resources."""
        pct = ", ".join(f"{k} {v:.2f} s" for k, v in self.percentiles().items())
        retried = sum(o.attempts > 1 for o in self.outcomes)
        lines = [f"{len(self.outcomes)} requests from {self.spec.clients} clients, {self.spec.concurrency} in flight, "
                 f"{len(self.kills)} node kills, {self.wall_s:.1f} s",
                 f"outcomes: {self.causes()} ({retried} needed a retry by the driver)",
                 f"latency of successful requests: {pct}"]
        for kill in self.kills:
            lines.append(f"killed {kill.node} at {kill.killed_s:.1f} s, restarted at {kill.restarted_s:.1f} s, "
                         f"{'republished' if kill.republished else 'serving its kept shares'} at {kill.serving_s:.1f} s")
        for node, (rss, fds) in self.resources_before.items():
            rss2, fds2 = self.resources_after.get(node, (0, 0))
            lines.append(f"{node}: RSS {rss / 1024:.0f} -> {rss2 / 1024:.0f} MiB, open fds {fds} -> {fds2}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"spec": asdict(self.spec), "wall_s": self.wall_s, "causes": self.causes(),
                           "latency_ok": self.percentiles(), "latency_all": self.percentiles(ok_only=False),
                           "kills": [asdict(k) for k in self.kills],
                           "resources_before": self.resources_before, "resources_after": self.resources_after,
                           "outcomes": [asdict(o) for o in self.outcomes]}, indent=1)


# ------------------------------------------------------------------------------------------------ the model


def tiny_model(seed: int = 0) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A random 1-layer GPT-2 (hidden 16, 4 heads, vocabulary 29, 16 positions), float64: cheap to run securely."""
    cfg = ModelConfig(arch="gpt2", vocab_size=29, hidden=16, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=4,
                      intermediate=32, max_positions=16, norm_eps=1e-5, act="gelu_tanh", bos_token_id=0,
                      eos_token_ids=(1,))
    gen = torch.Generator().manual_seed(seed)  # model weights for a benchmark, not secret randomness
    params = {}
    for name, shape in sorted(parameter_shapes(cfg).items()):
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        params[name] = 1.0 + 0.1 * noise if len(shape) == 1 and name.endswith("weight") else 0.3 * noise
    return cfg, params


def check_logits(cfg: ModelConfig, params: dict[str, torch.Tensor], ids: torch.Tensor, got: torch.Tensor,
                 tolerance: float) -> str:
    """"" if secure logits (B, T, V) match the plaintext forward within `tolerance`, else what is wrong."""
    want = plaintext.causal_lm_forward(cfg)(cfg, params, ids)
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    return "" if err <= tolerance else f"max |diff| {err:.2e} > {tolerance:g}"


def check_generation(cfg: ModelConfig, params: dict[str, torch.Tensor], prompt: torch.Tensor, tokens: torch.Tensor,
                     step_logits: torch.Tensor, tolerance: float) -> str:
    """"" if each generated token's logits match the plaintext logits of its prefix and the token is their argmax
    (up to the tolerance: secure near-ties may break either way), else what is wrong."""
    seq = torch.cat([prompt, tokens], dim=1)
    want = plaintext.causal_lm_forward(cfg)(cfg, params, seq)  # (1, T + n, V)
    for i in range(tokens.shape[1]):
        ref = want[:, prompt.shape[1] - 1 + i]  # (1, V)
        err = (step_logits[i] - ref).abs().max().item()
        if err > tolerance:
            return f"step {i}: logits max |diff| {err:.2e} > {tolerance:g}"
        if ref[0, tokens[0, i]].item() < ref.max().item() - 2 * tolerance:
            return f"step {i}: token {int(tokens[0, i])} is not an argmax of the plaintext logits"
    return ""


# ------------------------------------------------------------------------------------------------ measuring nodes


def node_resources(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a process, from /proc (Linux); (0, 0) if it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (OSError, StopIteration, ValueError):
        return 0, 0


# ------------------------------------------------------------------------------------------------ the run


class _Run:
    """One load run's shared state: the clients, the requests' inputs, answers counted per request."""

    def __init__(self, network: Any, spec: LoadSpec, cfg: ModelConfig, params: dict[str, torch.Tensor],
                 log: Log) -> None:
        self.network, self.spec, self.cfg, self.params, self.log = network, spec, cfg, params, log
        self.start = time.monotonic()
        self.done = 0
        self.answers: Counter[int] = Counter()
        self.lock = threading.Lock()
        gen = torch.Generator().manual_seed(spec.seed)  # prompts: test data, not secrets
        self.prompts = [torch.randint(2, cfg.vocab_size, (1, spec.prompt_len), generator=gen)
                        for _ in range(spec.requests)]
        self.clients = [self._client(f"load-client-{i}") for i in range(spec.clients)]
        self._restarts: queue.Queue[tuple[str, list[BaseException | None], threading.Event]] = queue.Queue()

    def restart(self, node_id: str, within_s: float = 120.0) -> None:
        """Have the main thread restart a node (a node dies with the thread that started it: PR_SET_PDEATHSIG)."""
        result: list[BaseException | None] = []
        done = threading.Event()
        self._restarts.put((node_id, result, done))
        if not done.wait(within_s):
            raise LoadError(f"{node_id} was not restarted within {within_s:g} s")
        if result and result[0] is not None:
            raise result[0]

    def serve_restarts(self) -> None:
        """Restart the nodes asked for (main thread only)."""
        while True:
            try:
                node_id, result, done = self._restarts.get_nowait()
            except queue.Empty:
                return
            try:
                self.network.restart(node_id)
                result.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the chaos thread
                result.append(exc)
            done.set()

    def _client(self, name: str) -> Any:
        from secureinfer.client import Client
        from secureinfer.net import certs
        from secureinfer.net.certs import Identity

        if not (self.network.certs_dir / f"{name}.pem").exists():
            certs.issue(self.network.certs_dir, name, "client")
        # half the deadline per attempt: a retry (only before half of it has passed) still ends within it
        return Client(Identity.load(self.network.certs_dir, name), self.network.addresses, self.spec.deadline_s / 2)

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def request(self, index: int) -> Outcome:
        """Run request `index` (retrying UNAVAILABLE / RESOURCE_EXHAUSTED while time is left) to one outcome."""
        client = self.clients[index % len(self.clients)]
        name = client.identity.name
        kind = "generate" if self.spec.generate_every and index % self.spec.generate_every == 1 else "logits"
        start, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            status, message, wrong = "OK", "", ""
            try:
                wrong = self._once(client, kind, self.prompts[index])
                with self.lock:
                    self.answers[index] += 1
            except RequestFailed as exc:
                status, message = exc.code.name, exc.details
            except NetworkError as exc:
                status, message = "NETWORK_ERROR", str(exc)
            except Exception as exc:  # noqa: BLE001 - every request must end in an outcome; the cause is reported
                status, message = type(exc).__name__, str(exc)
            seconds = time.monotonic() - start
            again = status in RETRY_CODES and attempts < self.spec.attempts and seconds < self.spec.deadline_s / 2
            if not again:
                with self.lock:
                    self.done += 1
                return Outcome(index, name, kind, status, status == "OK" and not wrong, seconds, attempts,
                               wrong or message[:300])
            time.sleep(0.2 * attempts)

    def _once(self, client: Any, kind: str, prompt: torch.Tensor) -> str:
        if kind == "logits":
            got = client.logits(MODEL_ID, prompt)
            return check_logits(self.cfg, self.params, prompt, got, self.spec.tolerance)
        result = client.generate(MODEL_ID, prompt, self.spec.new_tokens)
        return check_generation(self.cfg, self.params, prompt, result.tokens, result.logits, self.spec.tolerance)


def _chaos(run: _Run, owner: Any, committees: list[Any], kills: list[Kill], stop: threading.Event,
           errors: list[BaseException]) -> None:
    """Run the faults (`_faults`), keeping any error for the main thread."""
    try:
        _faults(run, owner, committees, kills, stop)
    except BaseException as exc:  # noqa: BLE001 - re-raised by run_load
        errors.append(exc)


def _faults(run: _Run, owner: Any, committees: list[Any], kills: list[Kill], stop: threading.Event) -> None:
    """Kill a committee member after each 1/(kills+1) of the requests, restart it, and wait until its committee
    serves again (republishing the model unless the node kept it)."""
    spec, network = run.spec, run.network
    for k in range(spec.kills):
        threshold = (k + 1) * spec.requests // (spec.kills + 1)
        while run.done < threshold and not stop.is_set():
            time.sleep(0.05)
        if stop.is_set():
            return
        members = committees[k % len(committees)].node_ids
        victim = members[1 + (k // len(committees)) % 2]
        network.kill(victim)
        killed = run.elapsed()
        run.log(f"chaos: SIGKILL {victim} at {killed:.1f} s ({run.done} requests done)")
        time.sleep(spec.downtime_s)
        run.restart(victim)
        restarted = run.elapsed()
        kept = network.config.keep_models
        committees[k % len(committees)] = (_kept if kept else _republish)(owner, run, members)
        kills.append(Kill(victim, killed, restarted, run.elapsed(), republished=not kept))
        run.log(f"chaos: {victim} restarted at {restarted:.1f} s, committee serving again at {run.elapsed():.1f} s")


def _kept(owner: Any, run: _Run, members: tuple[str, ...], within_s: float = 60.0) -> Any:
    """The committee `members` once the membership view lists the model there again (the restarted node hosts what
    it kept; its record takes a gossip round to spread)."""
    deadline = time.monotonic() + within_s
    while True:
        for view in owner.committees(MODEL_ID):
            if set(view.node_ids) == set(members):
                return view
        if time.monotonic() > deadline:
            raise LoadError(f"{members} did not host {MODEL_ID} again within {within_s:g} s of the restart")
        time.sleep(0.2)


def _republish(owner: Any, run: _Run, members: tuple[str, ...], within_s: float = 60.0) -> Any:
    """Publish the model again to `members` once the membership view lists them all (gossip takes a moment)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return owner.publish(MODEL_ID, run.cfg, run.params, nodes=members)[0]
        except (NetworkError, RequestFailed) as exc:
            if time.monotonic() > deadline:
                raise LoadError(f"could not republish to {members} within {within_s:g} s: {exc}") from exc
            time.sleep(0.5)


def run_load(network: Any, spec: LoadSpec, model: tuple[ModelConfig, dict[str, torch.Tensor]] | None = None,
             log: Log = print) -> LoadReport:
    """Publish the model to two committees of the started `network` (a simulate.LocalNetwork of >= 6 nodes), fire
    the spec's requests and faults, wait for every request's outcome, and measure; see the module docstring."""
    if len(network.node_ids) < 6:
        raise LoadError(f"the load run needs two disjoint committees: 6 nodes or more, got {len(network.node_ids)}")
    cfg, params = model or tiny_model(spec.seed)
    owner = network.owner(timeout_s=spec.deadline_s)
    committees = list(owner.publish(MODEL_ID, cfg, params, committees=2))
    run = _Run(network, spec, cfg, params, log)
    for client in run.clients:
        client.wait_for_model(MODEL_ID)
    killable = {n for c in committees for n in c.node_ids[1:]}
    steady = [n for n in network.node_ids if n not in killable]
    before = {n: node_resources(network.pid(n)) for n in steady}
    kills: list[Kill] = []
    chaos_errors: list[BaseException] = []
    stop = threading.Event()
    chaos = threading.Thread(target=_chaos, args=(run, owner, committees, kills, stop, chaos_errors),
                             name="load-chaos",
                             daemon=True)
    run.start = time.monotonic()
    chaos.start()
    outcomes: list[Outcome] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(spec.concurrency, thread_name_prefix="load") as pool:
            futures = [pool.submit(run.request, i) for i in range(spec.requests)]
            budget = spec.deadline_s * (spec.requests / spec.concurrency + 2) + 60 * spec.kills
            pending = set(futures)
            while pending:
                _, pending = concurrent.futures.wait(pending, timeout=0.1)
                run.serve_restarts()
                if pending and run.elapsed() > budget:
                    raise LoadError(f"{len(pending)} requests still running after {budget:.0f} s: lost or hung")
            outcomes = sorted((f.result() for f in futures), key=lambda o: o.index)
        wall = run.elapsed()
        stop.set()
        until = time.monotonic() + 120
        while chaos.is_alive() and time.monotonic() < until:
            run.serve_restarts()
            chaos.join(timeout=0.1)
        if chaos.is_alive():
            raise LoadError("the chaos thread did not finish (a restart or republish hung)")
        if chaos_errors:
            raise LoadError(f"fault injection failed: {chaos_errors[0]}") from chaos_errors[0]
    finally:
        stop.set()
        run.close()
    time.sleep(1.0)  # let the nodes finish closing the last sessions before measuring
    after = {n: node_resources(network.pid(n)) for n in steady}
    return LoadReport(spec, outcomes, kills, wall, before, after, dict(run.answers))


def main(args: Any) -> int:
    """`secureinfer bench load`: run the load on a fresh six-node local network and print (and save) the report."""
    from ..simulate import LocalNetwork, SimulationConfig

    spec = LoadSpec(requests=args.requests, concurrency=args.concurrency, clients=args.clients, kills=args.kills,
                    deadline_s=args.deadline_s)
    config = SimulationConfig(n_nodes=6, max_sessions=spec.concurrency + 2, log_level="WARNING",
                              keep_models=not args.republish)
    with LocalNetwork(config) as net:
        report = run_load(net, spec)
    print(report.summary())
    if args.json:
        Path(args.json).write_text(report.to_json())
    failed = sum(o.status != "OK" or not o.correct for o in report.outcomes)
    return 1 if any(o.status == "OK" and not o.correct for o in report.outcomes) else (0 if not failed else 3)


__all__ = ["Kill", "LoadError", "LoadReport", "LoadSpec", "Outcome", "check_generation", "check_logits",
           "node_resources", "run_load", "tiny_model"]
