"""Signer matches the standard library's HMAC-SHA256 for every key length."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from protocols.signing import Signer


@pytest.mark.parametrize("key", [b"k", b"x" * 64, b"y" * 65, b"z" * 200])
def test_signer_is_hmac_sha256_over_the_concatenated_frames(key: bytes) -> None:
    frames = [b"PNS", b"header", b"", b"body" * 1000]
    assert Signer(key).sign(frames) == hmac.new(key, b"".join(frames), hashlib.sha256).digest()


def test_empty_key_means_no_signature() -> None:
    signer = Signer(b"")
    assert not signer.enabled and signer.sign([b"x"]) == b""
    signer.verify(b"anything", [b"x"])  # accepted: signing is off
