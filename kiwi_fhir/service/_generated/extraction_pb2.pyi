from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_RECEIVED: _ClassVar[JobStatus]
    JOB_STATUS_PROCESSING: _ClassVar[JobStatus]
    JOB_STATUS_DONE: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_RECEIVED: JobStatus
JOB_STATUS_PROCESSING: JobStatus
JOB_STATUS_DONE: JobStatus
JOB_STATUS_FAILED: JobStatus

class ExtractTextRequest(_message.Message):
    __slots__ = ("text", "patient", "encounter", "document_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    ENCOUNTER_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    patient: str
    encounter: str
    document_id: str
    def __init__(self, text: _Optional[str] = ..., patient: _Optional[str] = ..., encounter: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class ExtractDocumentReferenceRequest(_message.Message):
    __slots__ = ("resource_json",)
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    resource_json: str
    def __init__(self, resource_json: _Optional[str] = ...) -> None: ...

class ExtractHL7Request(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    def __init__(self, message: _Optional[bytes] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Coding(_message.Message):
    __slots__ = ("system", "code", "display", "version", "score", "method")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    system: str
    code: str
    display: str
    version: str
    score: float
    method: str
    def __init__(self, system: _Optional[str] = ..., code: _Optional[str] = ..., display: _Optional[str] = ..., version: _Optional[str] = ..., score: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...

class Mention(_message.Message):
    __slots__ = ("id", "type", "start", "end", "text", "confidence", "fragments", "codes")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    start: int
    end: int
    text: str
    confidence: float
    fragments: _containers.RepeatedCompositeFieldContainer[Span]
    codes: _containers.RepeatedCompositeFieldContainer[Coding]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., text: _Optional[str] = ..., confidence: _Optional[float] = ..., fragments: _Optional[_Iterable[_Union[Span, _Mapping]]] = ..., codes: _Optional[_Iterable[_Union[Coding, _Mapping]]] = ...) -> None: ...

class Relation(_message.Message):
    __slots__ = ("entity_id", "modifier_id", "confidence")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    MODIFIER_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    modifier_id: str
    confidence: float
    def __init__(self, entity_id: _Optional[str] = ..., modifier_id: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class DocumentResult(_message.Message):
    __slots__ = ("document_id", "entities", "modifiers", "relations", "warnings")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    MODIFIERS_FIELD_NUMBER: _ClassVar[int]
    RELATIONS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    entities: _containers.RepeatedCompositeFieldContainer[Mention]
    modifiers: _containers.RepeatedCompositeFieldContainer[Mention]
    relations: _containers.RepeatedCompositeFieldContainer[Relation]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, document_id: _Optional[str] = ..., entities: _Optional[_Iterable[_Union[Mention, _Mapping]]] = ..., modifiers: _Optional[_Iterable[_Union[Mention, _Mapping]]] = ..., relations: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ExtractResponse(_message.Message):
    __slots__ = ("job_id", "status", "bundle_json", "documents", "model", "backend", "duplicate", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    bundle_json: str
    documents: _containers.RepeatedCompositeFieldContainer[DocumentResult]
    model: str
    backend: str
    duplicate: bool
    error: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., bundle_json: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[DocumentResult, _Mapping]]] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., duplicate: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("item_id", "text", "document_reference", "hl7")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    HL7_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    text: ExtractTextRequest
    document_reference: ExtractDocumentReferenceRequest
    hl7: ExtractHL7Request
    def __init__(self, item_id: _Optional[str] = ..., text: _Optional[_Union[ExtractTextRequest, _Mapping]] = ..., document_reference: _Optional[_Union[ExtractDocumentReferenceRequest, _Mapping]] = ..., hl7: _Optional[_Union[ExtractHL7Request, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("item_id", "result", "error")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    result: ExtractResponse
    error: ItemError
    def __init__(self, item_id: _Optional[str] = ..., result: _Optional[_Union[ExtractResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...
