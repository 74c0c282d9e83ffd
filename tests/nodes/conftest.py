"""Fixtures for node tests over real gRPC: a CA with identities, a background loop, and in-process daemons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .netutil import Cluster, LoopThread, Pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Nodes n0-n4 and g0-g3 (each its own operator) and m0, m1 (one operator), clients alice and bob, owner olivia;
    and an intruder CA's mallory (client) and n0."""
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    """One event loop thread for every daemon and raw call of the node tests."""
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def cluster(pki: Pki, loop: LoopThread) -> Iterator[Cluster]:
    """An empty cluster; the test starts the daemons it needs, and they are stopped at teardown."""
    c = Cluster(pki, loop)
    yield c
    c.close()
