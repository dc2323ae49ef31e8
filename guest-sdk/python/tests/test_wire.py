"""The hand-written protobuf codec of the worker (cerebelum._wire)."""

import pytest

from cerebelum import _wire
from cerebelum._wire import decode, encode


def test_varints():
    assert _wire.encode_varint(0) == b"\x00"
    assert _wire.encode_varint(1) == b"\x01"
    assert _wire.encode_varint(300) == b"\xac\x02"
    assert _wire.encode_varint(-1) == b"\xff" * 9 + b"\x01"
    for n in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        assert _wire.decode_varint(_wire.encode_varint(n), 0) == (n, len(_wire.encode_varint(n)))


# (message, value, bytes) checked by hand against the protobuf encoding rules.
VECTORS = [
    # int32 (varint): field 3, wire type 0 -> key 0x18; 300 -> ac 02
    ("PollTaskRequest", {"wait_ms": 300}, b"\x18\xac\x02"),
    # string: field 1, wire type 2 -> key 0x0a, length 7
    ("GetExecutionRequest", {"id": "testing"}, b"\x0a\x07testing"),
    # bytes after a string
    ("UploadPackageRequest", {"name": "p", "wasm": b"\x00\x01"}, b"\x0a\x01p\x12\x02\x00\x01"),
    # bool
    ("HeartbeatResponse", {"cancel_requested": True}, b"\x08\x01"),
    # negative int64: ten bytes of two's complement
    ("HeartbeatResponse", {"deadline_at_ms": -1}, b"\x10" + b"\xff" * 9 + b"\x01"),
    # negative int32: sign-extended to 64 bits, as proto3 does
    ("RegisterWorkerRequest", {"max_tasks": -2}, b"\x20\xfe" + b"\xff" * 8 + b"\x01"),
    # an optional field is written even when it holds the default
    ("HeartbeatRequest", {"token": "", "progress_json": ""}, b"\x12\x00"),
    ("StartExecutionRequest", {"package": "k", "version": 0}, b"\x0a\x01k\x10\x00"),
    # a nested message: task {token "t", attempt 1}
    ("PollTaskResponse", {"task": {"token": "t", "attempt": 1}}, b"\x0a\x05\x0a\x01t\x28\x01"),
    # a oneof member that is a message
    ("CompleteTaskRequest", {"token": "t", "error": {"kind": "k", "message": "m"}},
     b"\x0a\x01t\x1a\x06\x0a\x01k\x12\x01m"),
    # a oneof member that is a string, empty: still written
    ("CompleteTaskRequest", {"token": "t", "result_json": ""}, b"\x0a\x01t\x12\x00"),
    # an optional message
    ("CompleteTaskRequest", {"token": "t", "result_json": "1",
                             "next": {"worker_id": "w", "queue": "q"}},
     b"\x0a\x01t\x12\x011\x22\x06\x0a\x01w\x12\x01q"),
    # repeated messages, an enum
    ("ListWorkersResponse", {"workers": [{"worker_id": "a"}, {"max_tasks": 2}]},
     b"\x0a\x03\x0a\x01a\x0a\x02\x20\x02"),
    ("Execution", {"id": "e", "status": 4}, b"\x0a\x01e\x38\x04"),
    # plain fields holding their default are left out
    ("RegisterWorkerRequest", {"worker_id": "", "max_tasks": 0}, b""),
]


@pytest.mark.parametrize("message,value,data", VECTORS)
def test_hand_checked_vectors(message, value, data):
    assert encode(message, value) == data
    assert _subset(value, decode(message, data))


def _subset(value, decoded) -> bool:
    """``decoded`` holds ``value`` (and defaults for the other fields)."""
    if isinstance(value, dict):
        return all(_subset(v, decoded[k]) for k, v in value.items())
    if isinstance(value, list):
        return len(value) == len(decoded) and all(map(_subset, value, decoded))
    return value == decoded


def test_round_trip_fills_defaults():
    task = {"token": "tok", "execution_id": "e-1", "step": "s", "input_json": '{"a": 1}',
            "attempt": 2, "deadline_at_ms": 1_700_000_000_000, "heartbeat_ms": 1000}
    got = decode("PollTaskResponse", encode("PollTaskResponse", {"task": task}))
    assert got == {"task": task}
    assert decode("PollTaskResponse", b"") == {"task": None}
    empty = decode("WorkerTask", b"")
    assert empty["token"] == "" and empty["attempt"] == 0 and empty["heartbeat_ms"] is None
    execution = decode("Execution", encode("Execution", {
        "id": "x", "status": 5, "error_json": '{"kind": "failed"}', "created_at_ms": -5,
        "pending_approvals": [{"key": "k1"}, {"key": "k2", "decision_json": "{}"}]}))
    assert execution["status"] == 5 and execution["created_at_ms"] == -5
    assert execution["result_json"] is None and execution["cancel_requested"] is False
    assert [a["key"] for a in execution["pending_approvals"]] == ["k1", "k2"]
    assert execution["pending_approvals"][0]["decision_json"] is None
    text = {"token": "t", "result_json": '{"ok": "é✓"}'}
    assert decode("CompleteTaskRequest", encode("CompleteTaskRequest", text)) == \
        {**text, "error": None, "next": None}


def test_unknown_fields_are_skipped():
    known = encode("HeartbeatResponse", {"cancel_requested": True, "deadline_at_ms": 7})
    unknown = (b"\xf8\x06\x96\x01"  # field 111, varint 150
               b"\x19" + b"\x01" * 8 +  # field 3, 64-bit
               b"\x25" + b"\x02" * 4 +  # field 4, 32-bit
               b"\x2a\x03abc")  # field 5, length-delimited
    assert decode("HeartbeatResponse", unknown + known + unknown) == \
        {"cancel_requested": True, "deadline_at_ms": 7}
    # A newer server's Execution field inside a nested message.
    inner = b"\x0a\x01e" + b"\xa2\x06\x02hi"  # field 100, a string
    got = decode("StartExecutionResponse", b"\x0a" + bytes([len(inner)]) + inner + b"\x10\x01")
    assert got["execution"]["id"] == "e" and got["created"] is True


def test_the_last_oneof_member_on_the_wire_wins():
    data = b"\x12\x01x" + b"\x1a\x03\x0a\x01k"
    assert decode("CompleteTaskRequest", data) == \
        {"token": "", "result_json": None, "error": {"kind": "k", "message": "",
                                                     "details_json": None}, "next": None}


def test_mistakes_are_refused():
    with pytest.raises(ValueError, match="only one field of oneof outcome"):
        encode("CompleteTaskRequest", {"token": "t", "result_json": "1",
                                       "error": {"kind": "k"}})
    with pytest.raises(ValueError, match="has no field tokn"):
        encode("HeartbeatRequest", {"tokn": "t"})
    with pytest.raises(ValueError, match="out of range"):
        encode("PollTaskRequest", {"wait_ms": 2**31})
    with pytest.raises(TypeError, match="expected str"):
        encode("GetExecutionRequest", {"id": 5})
    with pytest.raises(ValueError, match="truncated"):
        decode("GetExecutionRequest", b"\x0a\x05ab")
    with pytest.raises(ValueError, match="truncated"):
        decode("PollTaskRequest", b"\x18\xac")
