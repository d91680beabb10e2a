"""The console's parts on their own: sessions (expiry, bound, sign-out), the origin check,
reading a spec's text, and what counts as an image."""

from __future__ import annotations

import pytest

from pnsweb.console.jobs import binaries, kind_of
from pnsweb.console.sessions import Sessions, same_authority
from pnsweb.console.views import parse_spec_text
from pnsweb.errors import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_its_lifetime() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock, lifetime=60)
    token = sessions.open("ada")
    found = sessions.find(token)
    assert found is not None and found.user == "ada"
    clock.now += 61
    assert sessions.find(token) is None and len(sessions) == 0


def test_sessions_are_bounded_oldest_first_and_end_on_sign_out() -> None:
    sessions = Sessions(size=2)
    first, second, third = (sessions.open(name) for name in ("a", "b", "c"))
    assert sessions.find(first) is None
    assert sessions.find(second) is not None and sessions.find(third) is not None
    sessions.close(third)
    assert sessions.find(third) is None
    assert sessions.find(None) is None and sessions.find("") is None
    assert sessions.find("guessed") is None


def test_tokens_are_unguessable_and_kept_only_as_a_mac() -> None:
    sessions = Sessions()
    token = sessions.open("ada")
    assert len(token) >= 40 and token != sessions.open("ada")
    assert token.encode() not in repr(vars(sessions)).encode()


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://node.example:5000", True), ("https://node.example:5000", True),
    ("http://NODE.example:5000", True), ("http://node.example:5001", False),
    ("http://evil.example:5000", False), ("null", False), ("http://node.example:5000/x", False),
    ("http://user@node.example:5000", False), ("ftp://node.example:5000", False),
    ("http://node.example.evil:5000", False), ("", False),
])
def test_only_this_server_is_the_same_origin(origin: str, ok: bool) -> None:
    assert same_authority(origin, "node.example:5000") is ok


def test_a_spec_is_read_from_toml_or_json() -> None:
    assert parse_spec_text('[pts.a]\nmode = "inproc"\n', "toml", None) == (
        "a", {"mode": "inproc"})
    assert parse_spec_text('{"mode": "inproc"}', "json", "b") == ("b", {"mode": "inproc"})
    assert parse_spec_text('{"pts": {"c": {"mode": "inproc"}}}', "json", "") == (
        "c", {"mode": "inproc"})


@pytest.mark.parametrize(("text", "form", "name", "field"), [
    ("[pts.a]\nmode = ", "toml", None, "spec"),
    ('{"mode": }', "json", "a", "spec"),
    ("[pts.a]\n[pts.b]\n", "toml", None, "spec"),
    ('mode = "inproc"', "toml", None, "name"),
    ('mode = "inproc"', "toml", "../etc", "name"),
    ('[pts.a]\nmode = "inproc"', "toml", "b", "name"),
    ("[1, 2]", "json", "a", "spec"),
    ("x", "yaml", "a", "format"),
])
def test_a_bad_spec_names_the_field_at_fault(text: str, form: str, name: str | None,
                                            field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_spec_text(text, form, name)
    assert caught.value.status == 400
    assert caught.value.extra["errors"][0]["field"] == field


def test_images_are_recognised_by_their_content_not_their_name() -> None:
    assert kind_of(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert kind_of(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert kind_of(b"GIF89a...") == "image/gif"
    assert kind_of(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert kind_of(b"<svg onload=alert(1)>") == "application/octet-stream"


def test_binary_outputs_are_found_within_a_few_levels() -> None:
    result = {"a": b"1", "b": [b"2", {"c": b"3"}], "d": "text",
              "deep": {"x": {"y": {"z": {"w": b"too deep"}}}}}
    assert list(binaries(result)) == [("a", b"1"), ("b/0", b"2"), ("b/1/c", b"3")]
    assert list(binaries(b"raw")) == [("result", b"raw")]
