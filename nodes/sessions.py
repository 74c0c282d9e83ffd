"""Sessions on a node: one caller stream, links to the other parties, and a worker thread running the engine.

A session starts when a client or model owner opens an `Inference.Session` stream to this node:
  1. the open request is checked (caller's role, committee, model, output, profile) before anything runs;
  2. a `GrpcChannel` is made with one `Link` per other participant: the caller, and for secure sessions the two
     other parties (this node dials the higher-index ones; the lower-index ones dial in through `Peer.Link`);
  3. a worker thread runs the engine program (publish: receive weight shares; infer: `serving.serve` or
     `plain_serving.serve_public`) while the event loop pumps the links;
  4. the session ends when the worker returns (status OK once every link has drained), or fails as a whole when
     the worker raises, any link breaks, a lower party has not dialled in within `peer_wait_s`, the deadline
     passes or the caller cancels; the other links are then cancelled so the other parties fail fast too.

Weights. A secure committee holds a model as secret shares, or (published with `public_weights`, open models only)
in the clear at every party. Requests on a public-weights committee run as `SecureStrategy(public_weights=True)`
unless their strategy says otherwise: with no strategy, the committee's way (public weights, since nothing is gained
by hiding open weights); with `public_weights=False`, the secret-weights protocol on the trivial sharing of the open
weights (`weights.share_public`: the same messages, rounds and bytes as on a committee holding real shares). The
prompt is secret either way (one-hot shares). `public_weights=True` on a committee holding shares (a closed model,
or one published as shares) is INVALID_ARGUMENT before the session starts.

Fixed point. The owner publishes a secure model at a precision f in [12, 24] (OpenSession.fractional_bits, 0 = 18):
the shares arrive encoded at f (public weights are encoded here at f), the hosted record advertises it, and every
session of that model runs with EngineConfig(fxp=FixedPoint(f)). A request naming another f (a SecureStrategy's
frac_bits, or a non-zero fractional_bits) is INVALID_ARGUMENT before the session starts.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import torch

from secureinfer import strategy
from secureinfer.models import checkpoint
from secureinfer.mpc.approx import profile as approx_profile
from secureinfer.mpc.comm import LinkModel
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.models.session import release_memory
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig, Party
from secureinfer.mpc.ring import FixedPoint
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS
from secureinfer.mpc.runtime import OWNER
from secureinfer.net.certs import Identity, PeerCert
from secureinfer.net.errors import BadRequest, Busy, Cancelled, PeerFailed, SessionExists, SessionTimeout, Unauthorized
from secureinfer.net.frames import FrameError
from secureinfer.net.membership import hosted_frac_bits
from secureinfer.net.transport import GrpcChannel, Link
from secureinfer.net.wire import config_from_json, config_to_json
from secureinfer.plaintext import serving as plain_serving
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .store import Hosted, ModelStore, public_model

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
PEER_WAIT_S = 30.0  # default: how long an incoming peer link waits for its session, and a session for its peers


@dataclass(frozen=True)
class NodeRuntime:
    """What sessions need from their node: identity, role, device, hosted models, limits and peer channels."""

    identity: Identity
    roles: tuple[str, ...]
    device: str
    store: ModelStore
    max_sessions: int
    session_timeout_s: float
    max_payload_bytes: int
    shaping: LinkModel
    dial: Callable[[str, str], grpc.aio.Channel]  # (address, node_id) -> a mutual-TLS channel to that node
    peer_wait_s: float = PEER_WAIT_S  # how long a session and an incoming peer link wait for each other
    batcher: Any = None  # a batching.Batcher: runs SecureStrategy(batch_requests=True) steps together; None: refused
    audit: Any = None  # leakage audit only (daemon.AUDIT_ENV): a comm.audit.FrameLog of every inbound message; None: off

    @property
    def node_id(self) -> str:
        return self.identity.name


def _caller_link_name(request: node_pb2.OpenSession) -> str:
    return OWNER if request.task == node_pb2.TASK_PUBLISH else serving.CLIENT


def _frame_of(message: Any) -> node_pb2.Frame | None:
    return message.frame if message.HasField("frame") else None


def check_open(runtime: NodeRuntime, request: node_pb2.OpenSession, caller: PeerCert) -> None:
    """Raise a NodeError unless this node may serve `request` from `caller` (nothing is run yet)."""
    if not _SESSION_ID.match(request.session_id):
        raise BadRequest("session_id must be 16-128 characters of [A-Za-z0-9_-]")
    if request.task not in (node_pb2.TASK_PUBLISH, node_pb2.TASK_ENCODE, node_pb2.TASK_DECODE):
        raise BadRequest(f"unknown task {request.task}")
    if request.privacy not in (node_pb2.PRIVACY_SECRET, node_pb2.PRIVACY_PUBLIC):
        raise BadRequest("privacy must be PRIVACY_SECRET or PRIVACY_PUBLIC")
    if not _MODEL_ID.match(request.model_id):
        raise BadRequest("model_id must be 1-128 characters of [A-Za-z0-9._/-], starting with a letter or digit")
    wanted = "owner" if request.task == node_pb2.TASK_PUBLISH else "client"
    if caller.role not in (wanted, "owner"):
        raise Unauthorized(f"{caller.name} has role {caller.role!r}; this task needs a {wanted} certificate")
    secret = request.privacy == node_pb2.PRIVACY_SECRET
    role = "secure" if secret else "plaintext"
    if role not in runtime.roles:
        raise BadRequest(f"node {runtime.node_id} has no {role!r} role (roles: {', '.join(runtime.roles)})")
    committee, size = request.committee, (3 if secret else 1)
    if len(committee.node_ids) != size or len(committee.addresses) != size:
        raise BadRequest(f"a {'secret' if secret else 'public'} session needs a committee of {size} nodes")
    if len(set(committee.node_ids)) != size or not committee.committee_id:
        raise BadRequest("committee nodes must be distinct and the committee must have an id")
    if request.party_index >= size or committee.node_ids[request.party_index] != runtime.node_id:
        raise BadRequest(f"this node ({runtime.node_id}) is not party {request.party_index} of the committee")
    if request.task == node_pb2.TASK_PUBLISH:
        if request.strategy_json:
            raise BadRequest("publishing takes no execution strategy")
        _check_publish_bits(request, secret)
        if request.public_weights and not secret:
            raise BadRequest("public_weights publishes an open model's weights in the clear to a secure committee of "
                             "three; a plaintext worker holds every model in the clear already (leave it unset)")
        config_from_json(request.model_config_json)
        runtime.store.check_replace(request.model_id, committee.committee_id, caller.name)
        return
    if request.public_weights:
        raise BadRequest("public_weights is for publishing; a request asks for public weights with "
                         "SecureStrategy(public_weights=True) in strategy_json")
    try:
        approx_profile.get(request.profile or "accurate")
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    hosted = runtime.store.get(request.model_id, committee.committee_id, request.privacy)
    if list(committee.node_ids) != list(hosted.record.node_ids) or request.party_index != hosted.record.party_index:
        # Only the nodes that hold the other shares may take part: anyone else would learn from this party's messages.
        raise BadRequest(f"committee {committee.committee_id!r} is {list(hosted.record.node_ids)} with this node as "
                         f"party {hosted.record.party_index}; the request names other members")
    held = hosted_frac_bits(hosted.record)
    if secret and request.fractional_bits not in (0, held):
        raise BadRequest(f"the request asks for frac_bits={request.fractional_bits} (fractional_bits), but "
                         f"committee {committee.committee_id!r} holds {request.model_id!r} at frac_bits={held} (its "
                         f"weights are encoded at that precision)")
    cfg = hosted.cfg
    if cfg.causal != (request.task == node_pb2.TASK_DECODE):
        raise BadRequest(f"model {request.model_id!r} is {'a decoder' if cfg.causal else 'an encoder'}: "
                         f"use TASK_{'DECODE' if cfg.causal else 'ENCODE'}")
    allowed = serving.DECODE_OUTPUTS if cfg.causal else serving.ENCODE_OUTPUTS
    if _output(request, cfg) not in allowed:
        raise BadRequest(f"unknown output {request.output!r} for {cfg.arch}; choose from {', '.join(allowed)}")
    _check_strategy(runtime, request, hosted)


def _check_publish_bits(request: node_pb2.OpenSession, secret: bool) -> None:
    """BadRequest unless a publish request's fixed point is 0 (the default) or, for a secure committee, in range."""
    if not request.fractional_bits:
        return
    if not secret:
        raise BadRequest("a plaintext worker holds open weights in floating point: leave fractional_bits unset")
    try:
        strategy.check_frac_bits(request.fractional_bits)
    except strategy.StrategyError as exc:
        raise BadRequest(f"bad fractional_bits: {exc}") from exc


def _strategy(request: node_pb2.OpenSession) -> strategy.Strategy | None:
    """The request's execution strategy, or None for the node's default; BadRequest if malformed."""
    if not request.strategy_json:
        return None
    try:
        return strategy.from_json(request.strategy_json)
    except strategy.StrategyError as exc:
        raise BadRequest(f"bad strategy_json: {exc}") from exc


def _check_strategy(runtime: NodeRuntime, request: node_pb2.OpenSession, hosted: Hosted) -> None:
    """BadRequest unless the request's strategy (if any) fits its privacy, how the committee holds the model's
    weights, and this node's device."""
    chosen = _strategy(request)
    if chosen is None:
        return
    secret = request.privacy == node_pb2.PRIVACY_SECRET
    open_weights = not secret or hosted.record.public_weights
    if isinstance(chosen, strategy.SecureStrategy) and chosen.public_weights and secret and not open_weights:
        raise BadRequest(f"strategy {chosen.name} needs the model's weights in the clear at every party, but committee "
                         f"{hosted.record.committee_id!r} holds {hosted.record.model_id!r} as secret shares (a closed "
                         f"model, or an open one published as shares): use a committee that hosts it with public "
                         f"weights, or drop public_weights")
    try:
        strategy.check_allowed(chosen, secret_prompt=secret, open_model=open_weights)
    except strategy.StrategyError as exc:
        raise BadRequest(f"strategy {chosen.name} is not allowed for a {'secret' if secret else 'public'} "
                         f"session: {exc}") from exc
    if not secret and not isinstance(chosen, strategy.PlaintextStrategy):
        raise BadRequest(f"a public session runs in the clear on one worker: give a PlaintextStrategy, not "
                         f"{chosen.name}")
    if secret:
        if not plain_serving.same_device_class(chosen.device, runtime.device):
            raise BadRequest(f"strategy {chosen.name} asks for device {chosen.device!r}, but this node computes on "
                             f"{runtime.device!r}")
        held = hosted_frac_bits(hosted.record)
        if chosen.frac_bits != held:
            raise BadRequest(f"strategy {chosen.name} asks for frac_bits={chosen.frac_bits}, but committee "
                             f"{hosted.record.committee_id!r} holds {hosted.record.model_id!r} at frac_bits={held} "
                             f"(its weights are encoded at that precision): use frac_bits={held}, or a committee "
                             f"hosting the model at {chosen.frac_bits}")
        if request.profile and request.profile != chosen.profile:
            raise BadRequest(f"profile {request.profile!r} contradicts the strategy's {chosen.profile!r}")
        if chosen.batch_requests and runtime.batcher is None:
            raise BadRequest(f"node {runtime.node_id} does not batch requests: drop batch_requests")
        if chosen.batch_requests and _output(request, hosted.cfg) == "logits" and not hosted.cfg.num_labels:
            raise BadRequest(f"model {request.model_id!r} has no classification head")
        return
    try:
        plain_serving.check_strategy(hosted.cfg, chosen, runtime.device)
    except serving.RequestError as exc:
        raise BadRequest(str(exc)) from exc


def _describe(error: BaseException) -> str:
    """One line for an error: a failed call's status and details rather than its multi-line repr."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__


def _output(request: node_pb2.OpenSession, cfg: checkpoint.ModelConfig) -> str:
    """The requested output, or the model's default (decoders: the last position; encoders: the embedding)."""
    return request.output or ("last" if cfg.causal else "embedding")


class NodeSession:
    """One session on this node, from the open request to the end of every link; with no caller, an internal
    session of the parties alone (a batch run, batching.py)."""

    def __init__(self, runtime: NodeRuntime, request: node_pb2.OpenSession, caller: PeerCert | None,
                 deadline: float) -> None:
        self.runtime = runtime
        self.request = request
        self.caller = caller
        self.deadline = deadline  # time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.secret = request.privacy == node_pb2.PRIVACY_SECRET
        self.index = request.party_index
        self.started = time.monotonic()
        self.caller_name = _caller_link_name(request)
        self.links: dict[str, Link] = {}
        if caller is not None:
            self.links[self.caller_name] = self._link(self.caller_name, node_pb2.ServerMessage)
        self.peers: tuple[int, ...] = ()  # the other parties this session exchanges shares with
        if self.secret and request.task != node_pb2.TASK_PUBLISH:
            self.peers = tuple(j for j in range(3) if j != self.index)
            for j in self.peers:
                self.links[PARTY_NAMES[j]] = self._link(PARTY_NAMES[j], node_pb2.PeerMessage)
        name = PARTY_NAMES[self.index] if self.secret else serving.PUBLIC_WORKER
        self.channel = GrpcChannel(name, self.links, deadline)
        self.result: Any = None
        self.frac_bits = request.fractional_bits or DEFAULT_FRAC_BITS  # infer: the hosted model's (set by _work)
        self.error: BaseException | None = None  # why the session was aborted, once it was
        self._attached: set[int] = set()  # lower parties whose Peer.Link has arrived
        self._tasks: dict[asyncio.Future, str] = {}  # link pumps and the link each one serves
        self._wake = asyncio.Event()  # set when a peer attaches or the session is aborted

    @property
    def id(self) -> str:
        return self.request.session_id

    def _link(self, name: str, message_type: Any) -> Link:
        on_device = name in PARTY_NAMES and self.runtime.device != "cpu"  # the client's shares are placed by the engine
        observer = None
        if self.runtime.audit is not None:
            receiver = PARTY_NAMES[self.index] if self.secret else serving.PUBLIC_WORKER
            observer = functools.partial(self.runtime.audit.record, receiver, session=self.id)
        return Link(name, self.loop, lambda f: message_type(frame=f), _frame_of, shaping=self.runtime.shaping,
                    max_payload_bytes=self.runtime.max_payload_bytes, device=self.runtime.device if on_device else None,
                    observer=observer)

    def _pump(self, name: str, coro: Any) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = name
        return task

    # --- running ---------------------------------------------------------------------------------------------------

    async def run(self, caller_stream: Any) -> None:
        """Pump the caller's stream (if any), dial the higher parties, run the worker; raise if anything fails."""
        if caller_stream is not None:
            self._pump(self.caller_name, self.links[self.caller_name].run(caller_stream))
        for j in self.peers:
            if j > self.index:
                self._pump(PARTY_NAMES[j], self._dial(j))
        worker = self._start_worker()
        try:
            await self._until_worker_done(worker)
            self.channel.finish()
            drain = asyncio.gather(*self._tasks)
            try:
                await asyncio.wait_for(drain, timeout=max(self.remaining(), 5.0))
            except asyncio.TimeoutError:
                raise SessionTimeout(f"session {self.id[:8]} did not close its links in time") from None
        except BaseException as exc:
            self.abort(exc if isinstance(exc, Exception) else Cancelled("session cancelled"))
            raise

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def _until_worker_done(self, worker: asyncio.Future) -> None:
        """Wait for the worker; raise as soon as a link fails, a peer is missing, the deadline passes or the session
        is aborted (the worker then stops at its next message)."""
        peer_deadline = self.started + self.runtime.peer_wait_s
        while not worker.done():
            if self.error is not None:
                raise self.error
            self._check_links()
            missing = [j for j in self.peers if j < self.index and j not in self._attached]
            now = time.monotonic()
            if missing and now >= peer_deadline:
                j = missing[0]
                raise PeerFailed(f"party {PARTY_NAMES[j]} ({self.request.committee.node_ids[j]}) did not connect "
                                 f"within {self.runtime.peer_wait_s:g} s")
            if self.remaining() <= 0:
                raise SessionTimeout(f"session {self.id[:8]} passed its deadline")
            timeout = min(self.remaining(), peer_deadline - now) if missing else self.remaining()
            self._wake.clear()
            wake = asyncio.ensure_future(self._wake.wait())
            running = {task for task in self._tasks if not task.done()}  # a pump that ended well is not waited on
            try:
                await asyncio.wait({worker, wake, *running}, timeout=max(timeout, 0.0),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
        if self.error is not None:  # aborted (cancelled, a shutdown): that, not the worker's knock-on error, is why
            raise self.error
        if not worker.cancelled() and worker.exception() is not None:
            self._check_links()  # likewise a failed link's own diagnosis (e.g. the caller's malformed frame) wins
        self.result = worker.result()

    def _check_links(self) -> None:
        """Raise for the first pump that ended badly: a malformed frame from the caller is the caller's error
        (INVALID_ARGUMENT); anything else on any link means a participant failed (UNAVAILABLE)."""
        for task, name in list(self._tasks.items()):
            if not task.done():
                continue
            if task.cancelled():
                raise PeerFailed(f"the link to {name} of session {self.id[:8]} was cancelled")
            exc = task.exception()
            if exc is None:
                continue
            if name == self.caller_name and isinstance(exc, FrameError):
                raise BadRequest(f"{name} sent a malformed frame: {exc}") from exc
            raise PeerFailed(f"the link to {name} of session {self.id[:8]} failed: {_describe(exc)}") from exc

    async def _dial(self, j: int) -> None:
        """Open the Peer.Link stream to party j and pump it."""
        committee = self.request.committee
        channel = self.runtime.dial(committee.addresses[j], committee.node_ids[j])
        call = node_pb2_grpc.PeerStub(channel).Link(timeout=max(self.remaining(), 1.0))
        try:
            hello = node_pb2.LinkHello(session_id=self.id, from_party=self.index, to_party=j)
            await call.write(node_pb2.PeerMessage(hello=hello))
            await self.links[PARTY_NAMES[j]].run(call)
        except BaseException:
            call.cancel()
            raise

    def check_peer(self, hello: node_pb2.LinkHello, caller: str) -> None:
        """Raise a NodeError unless `hello` is a link this session expects, from the committee's node for a lower
        party to this one, not yet linked, while the session runs."""
        if hello.to_party != self.index or hello.from_party not in self.peers or hello.from_party > self.index:
            raise BadRequest("this link does not fit the session's committee")
        if self.request.committee.node_ids[hello.from_party] != caller:
            raise Unauthorized(f"{caller} is not party {PARTY_NAMES[hello.from_party]} of this committee")
        if hello.from_party in self._attached:
            raise BadRequest(f"party {PARTY_NAMES[hello.from_party]} is already linked to this session")
        if self.error is not None:
            raise PeerFailed(f"session {self.id[:8]} has ended: {self.error}")

    async def attach_peer(self, j: int, stream: Any) -> None:
        """Pump an incoming Peer.Link stream from party j (called by the Peer servicer, after `check_peer`)."""
        self._attached.add(j)
        task = self._pump(PARTY_NAMES[j], self.links[PARTY_NAMES[j]].run(stream))
        self._wake.set()
        await task

    def abort(self, error: BaseException) -> None:
        """Fail every link and cancel every pump (the worker thread stops at its next message); first error wins."""
        if self.error is None:
            self.error = error
        self.channel.abort(error)
        for task in self._tasks:
            task.cancel()
        self._wake.set()

    def _start_worker(self) -> asyncio.Future:
        future: asyncio.Future = self.loop.create_future()
        # The worker's error is read by `_until_worker_done` unless the session failed first: never leave it unread.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

        def settle(fn: Callable[[], Any]) -> None:
            if not future.done():
                fn()

        def target() -> None:
            try:
                result = self._work()
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                self._settle_from_thread(settle, functools.partial(future.set_exception, exc))
            else:
                self._settle_from_thread(settle, functools.partial(future.set_result, result))

        threading.Thread(target=target, name=f"session-{self.id[:8]}", daemon=True).start()
        return future

    def _settle_from_thread(self, settle: Callable[[Callable[[], Any]], None], fn: Callable[[], Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(settle, fn)
        except RuntimeError:  # the loop is closed: the node has shut down and nobody waits for this result
            pass

    # --- the engine programs (worker thread) ---------------------------------------------------------------------

    def _engine(self) -> EngineConfig:
        return EngineConfig(fxp=FixedPoint(self.frac_bits), device=self.runtime.device, session_id=self.id)

    def _work(self) -> Any:
        request = self.request
        if request.task == node_pb2.TASK_PUBLISH:
            return self._publish()
        hosted = self.runtime.store.get(request.model_id, request.committee.committee_id, request.privacy)
        self.frac_bits = hosted_frac_bits(hosted.record)  # the precision its weights are encoded at
        chosen = _strategy(request)
        if not self.secret:
            return plain_serving.serve_public(self.channel, hosted.model, _output(request, hosted.cfg),
                                              device=self.runtime.device, strategy=chosen)
        profile = approx_profile.get(request.profile or (chosen.profile if chosen is not None else "accurate"))
        model = self._secure_model(hosted, chosen, profile)
        if isinstance(chosen, strategy.SecureStrategy) and chosen.batch_requests:  # steps run in shared batches
            return self.runtime.batcher.serve(self, model, _output(request, hosted.cfg), profile.name)
        step, with_meta = serving.step_function(hosted.cfg, _output(request, hosted.cfg))
        party = Party.connect(self.index, self.channel, self._engine())
        return serving.serve(party, model, step, with_meta, client=serving.CLIENT)

    def _secure_model(self, hosted: Hosted, chosen: strategy.Strategy | None, profile: Any) -> Any:
        """The model this secure session computes with: the hosted one, or on a public-weights committee asked for
        secret weights, one built on the trivial sharing of the open weights (module docstring)."""
        secret_asked = isinstance(chosen, strategy.SecureStrategy) and not chosen.public_weights
        if hosted.record.public_weights and secret_asked and hosted.open_params is not None:
            shares = weights.share_public(hosted.open_params, self.index, self._engine())
            return serving.build_model(hosted.cfg, shares, profile)
        return serving.with_profile(hosted.model, profile)

    def _publish(self) -> int:
        request = self.request
        cfg = config_from_json(request.model_config_json)
        record = node_pb2.HostedModel(model_id=request.model_id, committee_id=request.committee.committee_id,
                                      node_ids=list(request.committee.node_ids), party_index=self.index,
                                      privacy=request.privacy, arch=cfg.arch, config_json=config_to_json(cfg),
                                      public_weights=request.public_weights,
                                      frac_bits=self.frac_bits if self.secret else 0)
        open_params = None
        if self.secret and request.public_weights:  # an open model's (folded) parameters, in the clear
            open_params = _check_public(cfg, weights.receive_public(self.channel, OWNER))
            model: Any = serving.build_model(cfg, dict(open_params), approx_profile.ACCURATE, config=self._engine())
            release_memory()
        elif self.secret:
            party = Party.receiver(self.index, self.channel, self._engine())
            shares = weights.receive(party, OWNER)
            _check_shapes(cfg, {k: tuple(v.shape) for k, v in shares.items()})
            model = serving.build_model(cfg, shares, approx_profile.ACCURATE)
            release_memory()
        else:
            params = checkpoint.check_parameters(cfg, weights.receive_public(self.channel, OWNER),
                                                 torch.float64)
            model = public_model(cfg, params, self.runtime.device)
        self.runtime.store.put(Hosted(record, cfg, model, owner=self.caller.name, open_params=open_params))
        self.channel.send(OWNER, b"stored", "stored")
        return len(self.runtime.store)


def _check_shapes(cfg: checkpoint.ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise BadRequest unless the published shares have exactly the architecture's parameter shapes."""
    required, optional = checkpoint.parameter_shapes(cfg), checkpoint.optional_parameter_shapes(cfg)
    missing = sorted(set(required) - set(shapes))
    unknown = sorted(set(shapes) - set(required) - set(optional))
    if missing or unknown:
        raise BadRequest(f"published parameters do not fit {cfg.arch}: missing {missing[:3]}, unknown {unknown[:3]}")
    for name, shape in shapes.items():
        expected = required.get(name, optional.get(name))
        if shape != expected:
            raise BadRequest(f"parameter {name} has shape {shape}, expected {expected}")


def _check_public(cfg: checkpoint.ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published open weights as float64, or BadRequest unless they have the architecture's exact shapes and
    finite values."""
    _check_shapes(cfg, {k: tuple(v.shape) for k, v in params.items()})
    out = {}
    for name, value in params.items():
        value = value.to(torch.float64)
        if not bool(torch.isfinite(value).all()):
            raise BadRequest(f"published parameter {name} holds non-finite values")
        out[name] = value
    return out


class SessionRegistry:
    """The open sessions of a node, and incoming peer links waiting for theirs to open."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, NodeSession] = {}
        self._internal: set[str] = set()  # ids of internal sessions (batch runs): not counted against the limit
        self._waiters: dict[str, list[asyncio.Future]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: NodeSession, *, internal: bool = False) -> None:
        """Register a session; `internal` ones (batch runs, which serve sessions already admitted) skip the limit."""
        if session.id in self._sessions:
            raise SessionExists(f"session {session.id[:8]} is already open")
        if not internal and len(self._sessions) - len(self._internal) >= self.max_sessions:
            raise Busy(f"node is serving its maximum of {self.max_sessions} sessions")
        self._sessions[session.id] = session
        if internal:
            self._internal.add(session.id)
        for waiter in self._waiters.pop(session.id, []):
            if not waiter.done():
                waiter.set_result(session)

    def remove(self, session: NodeSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self._internal.discard(session.id)

    def get(self, session_id: str) -> NodeSession | None:
        return self._sessions.get(session_id)

    async def wait_for(self, session_id: str, timeout: float) -> NodeSession | None:
        """The session with this id, waiting up to `timeout` s for it to open here; None if it does not."""
        if session_id in self._sessions:
            return self._sessions[session_id]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(session_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(session_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(session_id, None)

    def abort_all(self, error: BaseException) -> None:
        for session in list(self._sessions.values()):
            session.abort(error)
