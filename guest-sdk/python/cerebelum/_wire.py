"""A minimal protobuf (proto3) codec for the few messages of
``proto/cerebelum/v1/cerebelum.proto`` the worker and the distributed
executor use, without the ``protobuf`` package.

Messages are plain dicts: ``encode("PollTaskRequest", {"worker_id": "w",
"queue": "q", "wait_ms": 20000})`` and ``decode("PollTaskResponse", data)``.
Decoding gives every field of the schema: the proto3 default for a plain
field absent on the wire, ``None`` for an absent ``optional`` field,
message or ``oneof`` member, ``[]`` for an absent ``repeated`` one.
Fields the schema does not know are skipped. Encoding leaves out plain
fields holding their default (as proto3 does) and writes optional and
oneof fields whenever they are not ``None``.
"""

from __future__ import annotations

from typing import Any

# Field specs: (number, "[optional |repeated |oneof NAME ]TYPE"), TYPE a
# scalar of _SCALARS or a message name. Numbers from cerebelum.proto.
SCHEMA: dict[str, dict[str, tuple[int, str]]] = {
    # -- service Cerebelum
    "UploadPackageRequest": {"name": (1, "string"), "wasm": (2, "bytes")},
    "Workflow": {"name": (1, "string"), "description": (2, "string")},
    "Step": {"name": (1, "string"), "description": (2, "string"),
             "options_json": (3, "string")},
    "Package": {"name": (1, "string"), "version": (2, "int64"), "sha256": (3, "string"),
                "workflows": (4, "repeated Workflow"), "steps": (5, "repeated Step"),
                "created_at_ms": (6, "int64"), "size_bytes": (7, "int64")},
    "StartExecutionRequest": {
        "package": (1, "string"), "version": (2, "optional int64"),
        "workflow": (3, "string"), "input_json": (4, "string"),
        "idempotency_key": (5, "optional string"), "worker_queue": (6, "optional string")},
    "StartExecutionResponse": {"execution": (1, "Execution"), "created": (2, "bool")},
    "Approval": {"execution_id": (1, "string"), "key": (2, "string"), "status": (3, "string"),
                 "request_json": (4, "string"), "decision_json": (5, "optional string")},
    "Execution": {
        "id": (1, "string"), "package": (2, "string"), "package_version": (3, "int64"),
        "package_sha256": (4, "string"), "workflow": (5, "string"),
        "input_json": (6, "string"), "status": (7, "enum"),
        "result_json": (8, "optional string"), "error_json": (9, "optional string"),
        "created_at_ms": (10, "int64"), "updated_at_ms": (11, "int64"),
        "wake_at_ms": (12, "optional int64"), "cancel_requested": (13, "bool"),
        "pending_approvals": (14, "repeated Approval"), "engine_failures": (15, "int64"),
        "engine_error": (16, "optional string"), "note": (17, "optional string"),
        "worker_queue": (18, "optional string")},
    "GetExecutionRequest": {"id": (1, "string")},
    "CancelRequest": {"id": (1, "string")},
    "SignalRequest": {"id": (1, "string"), "name": (2, "string"), "payload_json": (3, "string"),
                      "signal_id": (4, "string")},
    "SignalResponse": {"signal": (1, "Signal"), "created": (2, "bool")},
    "Signal": {"execution_id": (1, "string"), "seq": (2, "int64"), "name": (3, "string"),
               "payload_json": (4, "string"), "signal_id": (5, "optional string"),
               "received_at_ms": (6, "int64"), "consumed_by": (7, "optional int64")},
    # -- service WorkerService
    "RegisterWorkerRequest": {"worker_id": (1, "string"), "queue": (2, "string"),
                              "host": (3, "string"), "max_tasks": (4, "int32")},
    "RegisterWorkerResponse": {},
    "PollTaskRequest": {"worker_id": (1, "string"), "queue": (2, "string"),
                        "wait_ms": (3, "int32")},
    "PollTaskResponse": {"task": (1, "optional WorkerTask")},
    "WorkerTask": {"token": (1, "string"), "execution_id": (2, "string"), "step": (3, "string"),
                   "input_json": (4, "string"), "attempt": (5, "int32"),
                   "deadline_at_ms": (6, "int64"), "heartbeat_ms": (7, "optional int64")},
    "HeartbeatRequest": {"token": (1, "string"), "progress_json": (2, "optional string")},
    "HeartbeatResponse": {"cancel_requested": (1, "bool"), "deadline_at_ms": (2, "int64")},
    "CompleteTaskRequest": {"token": (1, "string"),
                            "result_json": (2, "oneof outcome string"),
                            "error": (3, "oneof outcome TaskError"),
                            "next": (4, "optional NextTask")},
    "NextTask": {"worker_id": (1, "string"), "queue": (2, "string")},
    "TaskError": {"kind": (1, "string"), "message": (2, "string"),
                  "details_json": (3, "optional string")},
    "CompleteTaskResponse": {"task": (1, "optional WorkerTask")},
    "ReleaseTaskRequest": {"token": (1, "string")},
    "ReleaseTaskResponse": {},
    "UnregisterWorkerRequest": {"worker_id": (1, "string")},
    "UnregisterWorkerResponse": {},
    "ListWorkersRequest": {},
    "ListWorkersResponse": {"workers": (1, "repeated Worker")},
    "Worker": {"worker_id": (1, "string"), "queue": (2, "string"), "host": (3, "string"),
               "max_tasks": (4, "int32"), "tasks_in_flight": (5, "int64"),
               "registered_at_ms": (6, "int64"), "last_seen_at_ms": (7, "int64")},
}

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_SCALARS = {"string": "", "bytes": b"", "int32": 0, "int64": 0, "uint32": 0,
            "enum": 0, "bool": False}


class _Field:
    __slots__ = ("name", "number", "type", "label", "oneof")

    def __init__(self, name: str, number: int, spec: str):
        words = spec.split()
        self.name, self.number, self.type = name, number, words[-1]
        self.label = words[0] if len(words) > 1 else ""
        self.oneof = words[1] if self.label == "oneof" else None
        if self.type not in _SCALARS and self.type not in SCHEMA:
            raise ValueError(f"{name}: unknown type {self.type}")

    @property
    def is_message(self) -> bool:
        return self.type not in _SCALARS

    @property
    def presence(self) -> bool:
        """Written whenever set (not only when not the default)."""
        return self.label in ("optional", "oneof") or self.is_message

    def default(self) -> Any:
        if self.label == "repeated":
            return []
        return None if self.presence else _SCALARS[self.type]


_FIELDS: dict[str, dict[str, _Field]] = {
    m: {name: _Field(name, n, spec) for name, (n, spec) in fields.items()}
    for m, fields in SCHEMA.items()}
_BY_NUMBER: dict[str, dict[int, _Field]] = {
    m: {f.number: f for f in fields.values()} for m, fields in _FIELDS.items()}


# ------------------------------------------------------------------ encoding


def encode_varint(n: int) -> bytes:
    """A varint; a negative number as its 64-bit two's complement (10 bytes)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def _encode_value(f: _Field, message: str, value: Any) -> bytes:
    t = f.type
    if f.is_message:
        body = encode(t, value)
        return _key(f.number, LEN) + encode_varint(len(body)) + body
    if t in ("string", "bytes"):
        if t == "string":
            if not isinstance(value, str):
                raise TypeError(f"{message}.{f.name}: expected str, got {type(value).__name__}")
            value = value.encode("utf-8")
        elif not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{message}.{f.name}: expected bytes, got {type(value).__name__}")
        return _key(f.number, LEN) + encode_varint(len(value)) + bytes(value)
    if t == "bool":
        return _key(f.number, VARINT) + (b"\x01" if value else b"\x00")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{message}.{f.name}: expected int, got {type(value).__name__}")
    bits = 64 if t == "int64" else 32
    low, high = (0, 1 << 32) if t == "uint32" else (-(1 << (bits - 1)), 1 << (bits - 1))
    if not low <= value < high:
        raise ValueError(f"{message}.{f.name}: {value} is out of range for {t}")
    return _key(f.number, VARINT) + encode_varint(value)


def encode(message: str, value: dict) -> bytes:
    """The wire bytes of ``value``, a dict of message ``message``."""
    fields = _FIELDS[message]
    unknown = set(value) - set(fields)
    if unknown:
        raise ValueError(f"{message} has no field {', '.join(sorted(unknown))}")
    oneofs: dict[str, str] = {}
    out = bytearray()
    for f in sorted(fields.values(), key=lambda f: f.number):
        v = value.get(f.name)
        if f.label == "repeated":
            for item in v or ():
                out += _encode_value(f, message, item)
            continue
        if v is None or (not f.presence and v == _SCALARS[f.type]):
            continue
        if f.oneof:
            if f.oneof in oneofs:
                raise ValueError(f"{message}: {oneofs[f.oneof]} and {f.name} are both set, "
                                 f"but only one field of oneof {f.oneof} may be")
            oneofs[f.oneof] = f.name
        out += _encode_value(f, message, v)
    return bytes(out)


# ------------------------------------------------------------------ decoding


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos``: (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated message: a varint runs past the end")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise ValueError("malformed message: a varint is longer than 10 bytes")


def _signed(n: int, bits: int) -> int:
    n &= (1 << bits) - 1
    return n - (1 << bits) if n >> (bits - 1) else n


def _scalar(t: str, raw: int) -> Any:
    if t == "bool":
        return raw != 0
    if t == "int64":
        return _signed(raw, 64)
    if t == "uint32":
        return raw & 0xFFFFFFFF
    return _signed(raw, 32)  # int32, enum


def decode(message: str, data: bytes) -> dict:
    """The dict of message ``message`` in ``data``; unknown fields skipped."""
    fields = _BY_NUMBER[message]
    out = {f.name: f.default() for f in _FIELDS[message].values()}
    data = bytes(data)
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            raw, pos = decode_varint(data, pos)
            chunk = None
        elif wire == LEN:
            length, pos = decode_varint(data, pos)
            if pos + length > len(data):
                raise ValueError(f"truncated {message}: field {number} runs past the end")
            chunk, pos = data[pos:pos + length], pos + length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > len(data):
                raise ValueError(f"truncated {message}: field {number} runs past the end")
            raw = int.from_bytes(data[pos:pos + size], "little")
            chunk, pos = None, pos + size
        else:
            raise ValueError(f"{message}: field {number} has wire type {wire} (groups are "
                             "not supported)")
        f = fields.get(number)
        if f is None:
            continue  # a field of a newer server
        if f.is_message or f.type in ("string", "bytes"):
            if chunk is None:
                raise ValueError(f"{message}.{f.name}: expected a length-delimited field")
            if f.is_message:
                value: Any = decode(f.type, chunk)
            else:
                value = chunk.decode("utf-8") if f.type == "string" else chunk
            values = [value]
        elif chunk is not None:  # a packed repeated scalar
            values, p = [], 0
            while p < len(chunk):
                raw, p = decode_varint(chunk, p)
                values.append(_scalar(f.type, raw))
        else:
            values = [_scalar(f.type, raw)]
        if f.label == "repeated":
            out[f.name].extend(values)
        else:
            if f.oneof:
                for other in _FIELDS[message].values():
                    if other.oneof == f.oneof and other is not f:
                        out[other.name] = None  # the last member on the wire wins
            out[f.name] = values[-1]
    return out

