"""Codec: framing, blobs, limits and every way a message can be refused."""

from __future__ import annotations

import gc
import tracemalloc

import msgpack
import pytest

from protocols.codec import BLOB_THRESHOLD, Codec, has_big_bytes, message_id, read_refusal
from protocols.errors import ErrorCode, ProtocolError
from protocols.signing import ReplayGuard
from protocols.version import MAGIC

KEY = b"k" * 64


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BIG = b"x" * BLOB_THRESHOLD


@pytest.mark.parametrize(("value", "limit", "expected"), [
    (BIG, 0, True),                                   # a large value itself, at any depth
    (BIG[:-1], 32, False),                            # one byte under the threshold
    ("t" * BLOB_THRESHOLD, 32, True),                 # text travels as a blob too
    (bytearray(BIG), 32, True), (memoryview(BIG), 32, True),
    ({"a": 1, "b": [None, True, 2.5, "s"]}, 32, False),
    ({"a": {"b": [1, {"c": BIG}]}}, 32, True),        # found wherever it sits
    ({"a": {"b": BIG}}, 2, True),                     # a scalar at the limit is judged...
    ({"a": {"b": {"c": BIG}}}, 2, False),             # ...a container past it is not walked
    ([BIG], 1, True), ([[BIG]], 1, False),
    ({}, 32, False), ([], 32, False), (None, 32, False), (12, 32, False),
])
def test_has_big_bytes_finds_a_large_value_no_deeper_than_its_limit(
        value: object, limit: int, expected: bool) -> None:
    assert has_big_bytes(value, limit) is expected


def test_round_trip_keeps_type_ids_and_body() -> None:
    codec = Codec(KEY)
    body = {"a": [1, 2.5, None, True], "b": b"\x00\xff", "c": {"nested": "text"}}
    message = Codec(KEY).decode(codec.encode("run.req", body, re="r1"))
    assert message.type == "run.req" and message.re == "r1" and message.body == body


def test_large_bytes_travel_as_blob_frames_and_come_back_identical() -> None:
    payload = bytes(range(256)) * (BLOB_THRESHOLD // 256 + 1)
    frames = Codec(KEY).encode("run.req", {"input": [payload, payload[:10]]})
    assert len(frames) == 5 and frames[4] is payload  # sent as is, not copied
    assert Codec(KEY).decode(frames).body == {"input": [payload, payload[:10]]}


def test_large_bodies_leave_no_reference_cycle_behind() -> None:
    """A cycle would keep the blobs alive until the cyclic collector runs: in an idle daemon,
    never (a recursive closure once kept 207 MB after ten 16 MiB runs)."""
    codec = Codec(KEY)
    payload = b"x" * BLOB_THRESHOLD
    gc.collect()
    gc.disable()
    try:
        frames = codec.encode("run.req", {"input": [payload, {"more": payload}]})
        assert Codec(KEY).decode(frames).body["input"][1]["more"] == payload
        del frames
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_large_body_does_not_pin_the_packers_grown_buffer() -> None:
    codec = Codec(KEY)
    size = 4 * 2**20
    bodies = ("s" * size, {"blob": b"b" * size})
    tracemalloc.start()      # counts what is allocated from here on, and still held
    try:
        for body in bodies:
            frames = codec.encode("run.req", body)
            del frames
            held, _peak = tracemalloc.get_traced_memory()
            assert held < size // 4, f"{held} bytes still held after encoding {type(body)}"
    finally:
        tracemalloc.stop()


def test_tuples_become_lists_and_unencodable_values_are_a_bad_request() -> None:
    codec = Codec(KEY)
    assert Codec(KEY).decode(codec.encode("x", (1, 2))).body == [1, 2]
    with pytest.raises(ProtocolError) as caught:
        codec.encode("x", {"f": object()})
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert Codec(KEY).decode(codec.encode("x", {"ok": 1})).body == {"ok": 1}  # packer reset


@pytest.mark.parametrize("frames", [
    [], [MAGIC], [b"nope", b"", b"", b""], [MAGIC, b"", b"\xc1", b""],
    [MAGIC, b"", msgpack.packb({"v": 1}), b""], [MAGIC, b"", msgpack.packb([1, 2, 3]), b""],
    [MAGIC, b"", msgpack.packb([1, "", "t", None, 1.0]), b""],
    [MAGIC, b"", msgpack.packb([1, "i", "t", 5, 1.0]), b""],
    [MAGIC, b"", msgpack.packb([1, "i", "t", None, "x"]), b""],
])
def test_malformed_frames_are_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError) as caught:
        Codec(b"").decode(frames)
    assert caught.value.code == ErrorCode.MALFORMED


def test_undecodable_body_is_malformed_and_names_the_message() -> None:
    frames = Codec(b"").encode("run.req", {})
    frames[3] = b"\xc1"
    with pytest.raises(ProtocolError) as caught:
        Codec(b"").decode(frames)
    assert caught.value.code == ErrorCode.MALFORMED
    assert caught.value.details["type"] == "run.req" and caught.value.details["re"]


def test_blob_reference_out_of_range_is_malformed() -> None:
    frames = Codec(b"").encode("x", {"b": b"y" * BLOB_THRESHOLD})
    with pytest.raises(ProtocolError) as caught:
        Codec(b"").decode(frames[:4])
    assert caught.value.code == ErrorCode.MALFORMED


def test_oversized_message_is_too_large_and_its_header_names_whom_to_answer() -> None:
    frames = Codec(b"").encode("run.req", {"input": "x" * 2000}, msg_id="m1")
    with pytest.raises(ProtocolError) as caught:
        Codec(b"", max_bytes=1000).decode(frames)
    assert caught.value.code == ErrorCode.TOO_LARGE and "re" not in caught.value.details
    assert message_id(frames) == "m1"
    assert message_id([MAGIC, b"", b"\xc1", b""]) is None
    assert message_id([MAGIC, b"", msgpack.packb([1, "x" * 2000, "t", None, 1.0]), b""]) is None


def test_signature_is_checked_over_every_frame() -> None:
    frames = Codec(KEY).encode("run.req", {"x": 1})
    Codec(KEY).decode(frames)
    for index in (0, 2, 3):
        bent = list(frames)
        bent[index] = bent[index] + b"\x00"
        with pytest.raises(ProtocolError) as caught:
            Codec(KEY).decode(bent)
        assert caught.value.code in (ErrorCode.AUTH, ErrorCode.MALFORMED)


def test_wrong_key_and_missing_signature_are_auth_errors() -> None:
    frames = Codec(b"other" * 10).encode("run.req", {})
    with pytest.raises(ProtocolError) as wrong:
        Codec(KEY).decode(frames)
    unsigned = Codec(b"").encode("run.req", {})
    with pytest.raises(ProtocolError) as missing:
        Codec(KEY).decode(unsigned)
    assert wrong.value.code == missing.value.code == ErrorCode.AUTH


def test_signing_off_accepts_any_signature() -> None:
    frames = Codec(KEY).encode("x", 1)
    assert Codec(b"").decode(frames).body == 1


def test_replayed_and_stale_messages_are_refused() -> None:
    clock = Clock()
    sender, receiver = Codec(KEY, clock=clock), Codec(KEY, clock=clock, skew=60)
    frames = sender.encode("ping.req", {})
    receiver.decode(frames)
    with pytest.raises(ProtocolError) as replayed:
        receiver.decode(frames)
    assert replayed.value.code == ErrorCode.REPLAY
    stale = sender.encode("ping.req", {}, ts=clock.now - 61)
    future = sender.encode("ping.req", {}, ts=clock.now + 61)
    for message in (stale, future):
        with pytest.raises(ProtocolError) as caught:
            receiver.decode(message)
        assert caught.value.code == ErrorCode.REPLAY


def test_replay_memory_outlives_the_window_then_stale_check_takes_over() -> None:
    clock = Clock()
    sender, receiver = Codec(KEY, clock=clock), Codec(KEY, clock=clock, skew=10)
    frames = sender.encode("ping.req", {})
    receiver.decode(frames)
    clock.now += 9  # still fresh: must still be remembered after a rotation
    receiver.decode(sender.encode("ping.req", {}))
    clock.now += 0.5
    with pytest.raises(ProtocolError) as caught:
        receiver.decode(frames)
    assert caught.value.code == ErrorCode.REPLAY
    clock.now += 100
    with pytest.raises(ProtocolError) as stale:
        receiver.decode(frames)
    assert "stale" in stale.value.message


def test_wrong_version_is_refused_with_version_code() -> None:
    codec = Codec(b"")
    frames = codec.encode("ping.req", {})
    frames[2] = msgpack.packb([99, "id1", "ping.req", None, 1.0])
    with pytest.raises(ProtocolError) as caught:
        Codec(b"").decode(frames)
    assert caught.value.code == ErrorCode.VERSION


def test_trace_id_travels_in_an_optional_sixth_header_field() -> None:
    traced = Codec(KEY).encode("ping.req", {}, trace="req-42")
    assert Codec(KEY).decode(traced).trace == "req-42"
    assert Codec(KEY).decode(Codec(KEY).encode("ping.req", {})).trace is None
    assert len(msgpack.unpackb(traced[2])) == 6


def test_an_id_is_remembered_for_as_long_as_its_timestamp_is_acceptable() -> None:
    clock = Clock()
    sender, receiver = Codec(KEY, clock=clock), Codec(KEY, clock=clock, skew=60)
    clock.now += 59
    ahead = sender.encode("ping.req", {}, ts=clock.now + 55)   # within the skew: accepted
    receiver.decode(ahead)
    for step in (2, 61):   # other traffic meanwhile, 63 s in all
        clock.now += step
        receiver.decode(sender.encode("ping.req", {}))
    with pytest.raises(ProtocolError) as replayed:   # its timestamp is still fresh
        receiver.decode(ahead)
    assert replayed.value.code == ErrorCode.REPLAY and "replayed" in replayed.value.message
    clock.now += 60      # and once it is stale, the stale check refuses it
    with pytest.raises(ProtocolError) as stale:
        receiver.decode(ahead)
    assert "stale" in stale.value.message


def test_the_replay_memory_forgets_ids_once_their_timestamps_are_stale() -> None:
    clock = Clock()
    sender, receiver = Codec(KEY, clock=clock), Codec(KEY, clock=clock, skew=10)
    for _ in range(50):
        receiver.decode(sender.encode("ping.req", {}, ts=clock.now + 9))
        clock.now += 1
    assert receiver.guard.remembered() <= 50
    clock.now += 30
    receiver.decode(sender.encode("ping.req", {}))
    assert receiver.guard.remembered() == 1


def test_the_replay_guard_sweeps_expired_ids_once_per_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids expire only as the clock enters the next window: one sweep there, none between."""
    clock = Clock(1000.0)
    guard = ReplayGuard(10, clock=clock)
    sweeps: list[float] = []
    sweep = guard._forget_expired
    monkeypatch.setattr(guard, "_forget_expired", lambda now: (sweeps.append(now), sweep(now)))
    for index in range(30):     # 1000.0 .. 1014.5: the windows [1000, 1010) and [1010, 1020)
        guard.check(f"id{index}", clock.now)
        clock.now += 0.5
    assert sweeps == [1000.0, 1010.0]
    assert guard.remembered() == 30          # none expired yet: ts + 10 >= 1010 for all
    clock.now = 1020.0                       # the ids stamped before 1000 + 10 expire
    guard.check("late", clock.now)
    assert sweeps[-1] == 1020.0 and guard.remembered() == 11
    with pytest.raises(ProtocolError):       # still within its window: still remembered
        guard.check("id29", 1014.5)


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "signing-off"])
def test_a_timestamp_that_is_not_a_finite_number_is_refused(ts: float, key: bytes) -> None:
    frames = Codec(key).encode("ping.req", {}, ts=ts)
    with pytest.raises(ProtocolError) as caught:
        Codec(key).decode(frames)
    assert caught.value.code == ErrorCode.MALFORMED and "ts" in caught.value.message


def test_the_signature_is_checked_before_anything_is_decoded() -> None:
    frames = Codec(b"other" * 10).encode("run.req", {})
    frames[2] = b"\xc1 not msgpack"
    with pytest.raises(ProtocolError) as caught:
        Codec(KEY).decode(frames)
    assert caught.value.code == ErrorCode.AUTH
    assert "re" not in caught.value.details   # an unauthenticated message names nobody


def test_an_auth_refusal_that_cannot_be_verified_is_still_read_as_one() -> None:
    daemon, client = Codec(KEY), Codec(b"wrong" * 10, guard_replay=False)
    answer = daemon.encode("error", {"code": "auth", "message": "bad message signature",
                                     "details": {}}, re="m1")
    answer[1] = b""      # refusals of unauthenticated messages go out unsigned
    with pytest.raises(ProtocolError):
        client.decode(answer)
    refusal = read_refusal(answer)
    assert refusal is not None and (refusal.type, refusal.re) == ("error", "m1")
    assert refusal.body["code"] == "auth"
    other = daemon.encode("error", {"code": "not_found", "message": "x", "details": {}}, re="m1")
    other[1] = b""
    reply = daemon.encode("ping.rep", {"code": "auth"}, re="m1")
    assert read_refusal(other) is None and read_refusal(reply) is None
    assert read_refusal([MAGIC, b"", b"\xc1", b""]) is None


def test_a_message_over_the_limit_is_refused_before_it_is_sent() -> None:
    codec = Codec(KEY, max_bytes=1000)
    with pytest.raises(ProtocolError) as caught:
        codec.encode("run.req", {"input": b"x" * (BLOB_THRESHOLD + 10)})
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert caught.value.details["limit"] == 1000 and caught.value.details["size"] > 1000
    frames = codec.encode("run.req", {"input": "x" * 900})     # at the limit: it goes
    assert sum(map(len, frames)) <= 1000
    with pytest.raises(ProtocolError):
        codec.encode("run.req", {"input": "x" * 1000})


def test_a_large_ascii_text_is_sent_from_its_own_bytes_not_a_copy() -> None:
    """A text blob frame of an ASCII string is a view of the string (the daemon's reply of a
    16 MiB string was one more 16 MiB copy); it decodes to the same string."""
    size = 4 * 2**20
    text = "t" * size
    codec = Codec(KEY, local=True)
    tracemalloc.start()
    try:
        frames = codec.encode("run.req", {"input": text})
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < size // 8, f"{held} bytes allocated to encode {size} of text"
    assert isinstance(frames[4], memoryview) and len(frames[4]) == size
    assert Codec(KEY, local=True).decode(frames).body == {"input": text}
    other = codec.encode("run.req", {"input": "é" * BLOB_THRESHOLD})   # not ASCII: encoded
    assert other[4] == ("é" * BLOB_THRESHOLD).encode()
