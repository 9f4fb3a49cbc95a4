from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EnsureLocalRequest(_message.Message):
    __slots__ = ("model_id", "extra_copy", "sync")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COPY_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    extra_copy: bool
    sync: bool
    def __init__(self, model_id: _Optional[str] = ..., extra_copy: bool = ..., sync: bool = ...) -> None: ...

class EnsureLocalResponse(_message.Message):
    __slots__ = ("loaded",)
    LOADED_FIELD_NUMBER: _ClassVar[int]
    loaded: bool
    def __init__(self, loaded: bool = ...) -> None: ...
