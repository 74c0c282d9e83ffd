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
    __slots__ = ("session_id", "task", "privacy", "model_id", "committee", "party_index", "output", "profile", "model_config_json", "fractional_bits", "strategy_json")
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
    def __init__(self, session_id: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., privacy: _Optional[_Union[Privacy, str]] = ..., model_id: _Optional[str] = ..., committee: _Optional[_Union[Committee, _Mapping]] = ..., party_index: _Optional[int] = ..., output: _Optional[str] = ..., profile: _Optional[str] = ..., model_config_json: _Optional[str] = ..., fractional_bits: _Optional[int] = ..., strategy_json: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("model_id", "committee_id", "node_ids", "party_index", "privacy", "arch", "config_json")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    PARTY_INDEX_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    committee_id: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    party_index: int
    privacy: Privacy
    arch: str
    config_json: str
    def __init__(self, model_id: _Optional[str] = ..., committee_id: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., party_index: _Optional[int] = ..., privacy: _Optional[_Union[Privacy, str]] = ..., arch: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...

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
