"""Fixtures for the shared network pieces: a background event loop for the transport's streams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.nodes.netutil import LoopThread


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    """One event loop thread for the links under test."""
    thread = LoopThread()
    yield thread
    thread.close()
