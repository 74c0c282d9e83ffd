"""The secure forwards of MiniLM and GPT-2 keep their rounds, bytes and bit-exact outputs (golden.py says how)."""

from __future__ import annotations

import json

import pytest

from . import golden

GOLDEN = json.loads(golden.GOLDEN_PATH.read_text())


def test_profiles_unchanged() -> None:
    assert golden.profiles() == GOLDEN["profiles"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(golden.FORWARDS))
def test_secure_forward_matches_golden(name: str) -> None:
    got, want = golden.FORWARDS[name](), GOLDEN[name]
    for i, (g, w) in enumerate(zip(got["steps"], want["steps"], strict=True)):
        assert g == w, f"{name} step {i}: rounds/bytes {g} != golden {w}"
    assert got["output_sha256"] == want["output_sha256"], (
        f"{name}: output changed (first values {got['output_head']} vs golden {want['output_head']})")
    assert got == want
