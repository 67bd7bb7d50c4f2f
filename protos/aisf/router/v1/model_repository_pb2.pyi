import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_EVENT_KIND_UNSPECIFIED: _ClassVar[ModelEventKind]
    MODEL_EVENT_KIND_LOADED: _ClassVar[ModelEventKind]
    MODEL_EVENT_KIND_UNLOADED: _ClassVar[ModelEventKind]
    MODEL_EVENT_KIND_LOAD_FAILED: _ClassVar[ModelEventKind]
MODEL_EVENT_KIND_UNSPECIFIED: ModelEventKind
MODEL_EVENT_KIND_LOADED: ModelEventKind
MODEL_EVENT_KIND_UNLOADED: ModelEventKind
MODEL_EVENT_KIND_LOAD_FAILED: ModelEventKind

class ListModelEventsRequest(_message.Message):
    __slots__ = ("model_name", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ModelEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[ModelEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ModelEvent(_message.Message):
    __slots__ = ("model_name", "model_version", "kind", "reason", "create_time", "backend")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    kind: ModelEventKind
    reason: str
    create_time: _timestamp_pb2.Timestamp
    backend: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., kind: _Optional[_Union[ModelEventKind, str]] = ..., reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backend: _Optional[str] = ...) -> None: ...
