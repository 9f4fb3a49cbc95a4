from mesh.edges.proto import model_mesh_pb2 as _model_mesh_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetVModelSplitRequest(_message.Message):
    __slots__ = ("request", "canary_percent", "chain")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    request: _model_mesh_pb2.SetVModelRequest
    canary_percent: int
    chain: VModelChain
    def __init__(self, request: _Optional[_Union[_model_mesh_pb2.SetVModelRequest, _Mapping]] = ..., canary_percent: _Optional[int] = ..., chain: _Optional[_Union[VModelChain, _Mapping]] = ...) -> None: ...

class VModelChain(_message.Message):
    __slots__ = ("transformer", "explainer")
    TRANSFORMER_FIELD_NUMBER: _ClassVar[int]
    EXPLAINER_FIELD_NUMBER: _ClassVar[int]
    transformer: ChainStep
    explainer: ChainStep
    def __init__(self, transformer: _Optional[_Union[ChainStep, _Mapping]] = ..., explainer: _Optional[_Union[ChainStep, _Mapping]] = ...) -> None: ...

class ChainStep(_message.Message):
    __slots__ = ("model_id", "model_info")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_info: _model_mesh_pb2.ModelInfo
    def __init__(self, model_id: _Optional[str] = ..., model_info: _Optional[_Union[_model_mesh_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class ModelCopy(_message.Message):
    __slots__ = ("instance", "state", "since_ms")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    instance: str
    state: str
    since_ms: int
    def __init__(self, instance: _Optional[str] = ..., state: _Optional[str] = ..., since_ms: _Optional[int] = ...) -> None: ...

class ModelFailure(_message.Message):
    __slots__ = ("instance", "time_ms", "message")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    instance: str
    time_ms: int
    message: str
    def __init__(self, instance: _Optional[str] = ..., time_ms: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ModelEntry(_message.Message):
    __slots__ = ("model_id", "type", "path", "status", "copies", "failures", "size_bytes", "last_used_ms", "refs", "auto_delete")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_MS_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    AUTO_DELETE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    type: str
    path: str
    status: str
    copies: _containers.RepeatedCompositeFieldContainer[ModelCopy]
    failures: _containers.RepeatedCompositeFieldContainer[ModelFailure]
    size_bytes: int
    last_used_ms: int
    refs: int
    auto_delete: bool
    def __init__(self, model_id: _Optional[str] = ..., type: _Optional[str] = ..., path: _Optional[str] = ..., status: _Optional[str] = ..., copies: _Optional[_Iterable[_Union[ModelCopy, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[ModelFailure, _Mapping]]] = ..., size_bytes: _Optional[int] = ..., last_used_ms: _Optional[int] = ..., refs: _Optional[int] = ..., auto_delete: bool = ...) -> None: ...

class ModelList(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelEntry]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelEntry, _Mapping]]] = ...) -> None: ...

class VModelEntry(_message.Message):
    __slots__ = ("vmodel_id", "owner", "active_model_id", "target_model_id", "status", "active_model_status")
    VMODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MODEL_STATUS_FIELD_NUMBER: _ClassVar[int]
    vmodel_id: str
    owner: str
    active_model_id: str
    target_model_id: str
    status: str
    active_model_status: str
    def __init__(self, vmodel_id: _Optional[str] = ..., owner: _Optional[str] = ..., active_model_id: _Optional[str] = ..., target_model_id: _Optional[str] = ..., status: _Optional[str] = ..., active_model_status: _Optional[str] = ...) -> None: ...

class VModelList(_message.Message):
    __slots__ = ("vmodels",)
    VMODELS_FIELD_NUMBER: _ClassVar[int]
    vmodels: _containers.RepeatedCompositeFieldContainer[VModelEntry]
    def __init__(self, vmodels: _Optional[_Iterable[_Union[VModelEntry, _Mapping]]] = ...) -> None: ...

class InstanceEntry(_message.Message):
    __slots__ = ("instance_id", "endpoint", "capacity_bytes", "used_bytes", "lru_time_ms", "model_count", "in_flight_loads", "rpm", "labels", "shutting_down")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LRU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_LOADS_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SHUTTING_DOWN_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    endpoint: str
    capacity_bytes: int
    used_bytes: int
    lru_time_ms: int
    model_count: int
    in_flight_loads: int
    rpm: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    shutting_down: bool
    def __init__(self, instance_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., lru_time_ms: _Optional[int] = ..., model_count: _Optional[int] = ..., in_flight_loads: _Optional[int] = ..., rpm: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., shutting_down: bool = ...) -> None: ...

class InstanceList(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceEntry]
    def __init__(self, instances: _Optional[_Iterable[_Union[InstanceEntry, _Mapping]]] = ...) -> None: ...
