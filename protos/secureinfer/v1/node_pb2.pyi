from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_BYTES: _ClassVar[PayloadKind]
    PAYLOAD_KIND_TENSOR: _ClassVar[PayloadKind]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_PUBLISH: _ClassVar[Task]
    TASK_ENCODE: _ClassVar[Task]
    TASK_DECODE: _ClassVar[Task]

class Privacy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIVACY_UNSPECIFIED: _ClassVar[Privacy]
    PRIVACY_SECRET: _ClassVar[Privacy]
    PRIVACY_PUBLIC: _ClassVar[Privacy]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_BYTES: PayloadKind
PAYLOAD_KIND_TENSOR: PayloadKind
TASK_UNSPECIFIED: Task
TASK_PUBLISH: Task
TASK_ENCODE: Task
TASK_DECODE: Task
PRIVACY_UNSPECIFIED: Privacy
PRIVACY_SECRET: Privacy
PRIVACY_PUBLIC: Privacy

class Frame(_message.Message):
    __slots__ = ("tag", "clock", "kind", "dtype", "shape", "total_bytes", "data", "last")
    TAG_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    tag: str
    clock: int
    kind: PayloadKind
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    total_bytes: int
    data: bytes
    last: bool
    def __init__(self, tag: _Optional[str] = ..., clock: _Optional[int] = ..., kind: _Optional[_Union[PayloadKind, str]] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class LinkHello(_message.Message):
    __slots__ = ("session_id", "from_party", "to_party")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_PARTY_FIELD_NUMBER: _ClassVar[int]
    TO_PARTY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    from_party: int
    to_party: int
    def __init__(self, session_id: _Optional[str] = ..., from_party: _Optional[int] = ..., to_party: _Optional[int] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("hello", "frame")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    hello: LinkHello
    frame: Frame
    def __init__(self, hello: _Optional[_Union[LinkHello, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class Committee(_message.Message):
    __slots__ = ("committee_id", "node_ids", "addresses")
    COMMITTEE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    committee_id: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, committee_id: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class OpenSession(_message.Message):
    __slots__ = ("session_id", "task", "privacy", "model_id", "committee", "party_index", "output", "profile", "model_config_json", "fractional_bits", "strategy_json", "public_weights", "owner_seal")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    PARTY_INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    FRACTIONAL_BITS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_JSON_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_SEAL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task: Task
    privacy: Privacy
    model_id: str
    committee: Committee
    party_index: int
    output: str
    profile: str
    model_config_json: str
    fractional_bits: int
    strategy_json: str
    public_weights: bool
    owner_seal: OwnerSeal
    def __init__(self, session_id: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., privacy: _Optional[_Union[Privacy, str]] = ..., model_id: _Optional[str] = ..., committee: _Optional[_Union[Committee, _Mapping]] = ..., party_index: _Optional[int] = ..., output: _Optional[str] = ..., profile: _Optional[str] = ..., model_config_json: _Optional[str] = ..., fractional_bits: _Optional[int] = ..., strategy_json: _Optional[str] = ..., public_weights: _Optional[bool] = ..., owner_seal: _Optional[_Union[OwnerSeal, _Mapping]] = ...) -> None: ...

class OwnerSeal(_message.Message):
    __slots__ = ("certificate_pem", "signature")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    signature: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SessionAccepted(_message.Message):
    __slots__ = ("session_id", "node_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    node_id: str
    def __init__(self, session_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("open", "frame")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    open: OpenSession
    frame: Frame
    def __init__(self, open: _Optional[_Union[OpenSession, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("accepted", "frame")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    accepted: SessionAccepted
    frame: Frame
    def __init__(self, accepted: _Optional[_Union[SessionAccepted, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class HostedModel(_message.Message):
    __slots__ = ("model_id", "committee_id", "node_ids", "party_index", "privacy", "arch", "config_json", "public_weights", "frac_bits", "owner_seal")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    PARTY_INDEX_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    OWNER_SEAL_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    committee_id: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    party_index: int
    privacy: Privacy
    arch: str
    config_json: str
    public_weights: bool
    frac_bits: int
    owner_seal: OwnerSeal
    def __init__(self, model_id: _Optional[str] = ..., committee_id: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., party_index: _Optional[int] = ..., privacy: _Optional[_Union[Privacy, str]] = ..., arch: _Optional[str] = ..., config_json: _Optional[str] = ..., public_weights: _Optional[bool] = ..., frac_bits: _Optional[int] = ..., owner_seal: _Optional[_Union[OwnerSeal, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[HostedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[HostedModel, _Mapping]]] = ...) -> None: ...

class Capability(_message.Message):
    __slots__ = ("device", "memory_bytes", "matmul_gflops", "cpu_count")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MATMUL_GFLOPS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    device: str
    memory_bytes: int
    matmul_gflops: float
    cpu_count: int
    def __init__(self, device: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., matmul_gflops: _Optional[float] = ..., cpu_count: _Optional[int] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("node_id", "address", "roles", "capability", "models", "healthy", "heartbeat", "issued_at", "ttl_s", "certificate_pem", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    capability: Capability
    models: _containers.RepeatedCompositeFieldContainer[HostedModel]
    healthy: bool
    heartbeat: int
    issued_at: float
    ttl_s: float
    certificate_pem: bytes
    signature: bytes
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., capability: _Optional[_Union[Capability, _Mapping]] = ..., models: _Optional[_Iterable[_Union[HostedModel, _Mapping]]] = ..., healthy: _Optional[bool] = ..., heartbeat: _Optional[int] = ..., issued_at: _Optional[float] = ..., ttl_s: _Optional[float] = ..., certificate_pem: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GossipRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class GossipReply(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node_id", "records", "active_sessions")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    records: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    active_sessions: int
    def __init__(self, node_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ..., active_sessions: _Optional[int] = ...) -> None: ...

class PerfRecord(_message.Message):
    __slots__ = ("key", "timestamp", "model", "arch", "n_params", "n_layers", "hidden", "vocab", "seq_len", "batch", "gen_tokens", "task", "device", "cpu_count", "matmul_gflops", "memory_bytes", "host", "latency_s", "bandwidth_bytes_per_s", "mode", "strategy_name", "strategy_json", "status", "error", "prefill_s", "per_token_s", "total_s", "load_s", "rounds", "prefill_rounds", "bytes_per_party_max", "bytes_per_party_sum", "peak_rss_mb", "peak_device_mb", "max_abs_err", "min_cosine", "tokens_equal", "repeat", "steps_json", "env_json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    N_PARAMS_FIELD_NUMBER: _ClassVar[int]
    N_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    VOCAB_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    GEN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MATMUL_GFLOPS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PREFILL_S_FIELD_NUMBER: _ClassVar[int]
    PER_TOKEN_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_PARTY_MAX_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_PARTY_SUM_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_MB_FIELD_NUMBER: _ClassVar[int]
    PEAK_DEVICE_MB_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERR_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_EQUAL_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    STEPS_JSON_FIELD_NUMBER: _ClassVar[int]
    ENV_JSON_FIELD_NUMBER: _ClassVar[int]
    key: str
    timestamp: float
    model: str
    arch: str
    n_params: int
    n_layers: int
    hidden: int
    vocab: int
    seq_len: int
    batch: int
    gen_tokens: int
    task: str
    device: str
    cpu_count: int
    matmul_gflops: float
    memory_bytes: int
    host: str
    latency_s: float
    bandwidth_bytes_per_s: float
    mode: str
    strategy_name: str
    strategy_json: str
    status: str
    error: str
    prefill_s: float
    per_token_s: float
    total_s: float
    load_s: float
    rounds: int
    prefill_rounds: int
    bytes_per_party_max: int
    bytes_per_party_sum: int
    peak_rss_mb: float
    peak_device_mb: float
    max_abs_err: float
    min_cosine: float
    tokens_equal: bool
    repeat: int
    steps_json: str
    env_json: str
    def __init__(self, key: _Optional[str] = ..., timestamp: _Optional[float] = ..., model: _Optional[str] = ..., arch: _Optional[str] = ..., n_params: _Optional[int] = ..., n_layers: _Optional[int] = ..., hidden: _Optional[int] = ..., vocab: _Optional[int] = ..., seq_len: _Optional[int] = ..., batch: _Optional[int] = ..., gen_tokens: _Optional[int] = ..., task: _Optional[str] = ..., device: _Optional[str] = ..., cpu_count: _Optional[int] = ..., matmul_gflops: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., host: _Optional[str] = ..., latency_s: _Optional[float] = ..., bandwidth_bytes_per_s: _Optional[float] = ..., mode: _Optional[str] = ..., strategy_name: _Optional[str] = ..., strategy_json: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., prefill_s: _Optional[float] = ..., per_token_s: _Optional[float] = ..., total_s: _Optional[float] = ..., load_s: _Optional[float] = ..., rounds: _Optional[int] = ..., prefill_rounds: _Optional[int] = ..., bytes_per_party_max: _Optional[int] = ..., bytes_per_party_sum: _Optional[int] = ..., peak_rss_mb: _Optional[float] = ..., peak_device_mb: _Optional[float] = ..., max_abs_err: _Optional[float] = ..., min_cosine: _Optional[float] = ..., tokens_equal: _Optional[bool] = ..., repeat: _Optional[int] = ..., steps_json: _Optional[str] = ..., env_json: _Optional[str] = ...) -> None: ...

class PushRecordsRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[PerfRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[PerfRecord, _Mapping]]] = ...) -> None: ...

class PushRecordsReply(_message.Message):
    __slots__ = ("added", "known")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    added: int
    known: int
    def __init__(self, added: _Optional[int] = ..., known: _Optional[int] = ...) -> None: ...

class PullRecordsRequest(_message.Message):
    __slots__ = ("cursor", "limit", "keys_only")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    cursor: int
    limit: int
    keys_only: bool
    def __init__(self, cursor: _Optional[int] = ..., limit: _Optional[int] = ..., keys_only: _Optional[bool] = ...) -> None: ...

class PullRecordsReply(_message.Message):
    __slots__ = ("records", "keys", "next_cursor", "more", "store_id")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[PerfRecord]
    keys: _containers.RepeatedScalarFieldContainer[str]
    next_cursor: int
    more: bool
    store_id: str
    def __init__(self, records: _Optional[_Iterable[_Union[PerfRecord, _Mapping]]] = ..., keys: _Optional[_Iterable[str]] = ..., next_cursor: _Optional[int] = ..., more: _Optional[bool] = ..., store_id: _Optional[str] = ...) -> None: ...

class FetchRecordsRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchRecordsReply(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[PerfRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[PerfRecord, _Mapping]]] = ...) -> None: ...
