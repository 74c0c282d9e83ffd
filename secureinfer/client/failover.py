"""Committee failover: a request tries its placements in order and moves on only when one failed in a way another
committee may not (a node died, was busy, ran out of time, or no longer hosts the model).

    value = failover([(view, lambda: run_on(view)) for view in views], none_left="no committee for 'tiny'")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from secureinfer.net.membership import CommitteeView

from .errors import NetworkError, RequestFailed

T = TypeVar("T")


def failover(attempts: Iterable[tuple[CommitteeView, Callable[[], T]]], none_left: str) -> T:
    """The result of the first attempt that succeeds, in order. A retryable RequestFailed moves on to the next
    attempt (a generation resumes there after the tokens it already has: resume.py); any other failure is raised. A placement (committee id and nodes) that failed is not tried again. When nothing is left, the last
    failure is raised (NetworkError(`none_left`) if nothing was tried)."""
    failed: set[tuple[str, tuple[str, ...]]] = set()
    last: RequestFailed | None = None
    for view, attempt in attempts:
        where = (view.committee_id, view.node_ids)
        if where in failed:
            continue
        try:
            return attempt()
        except RequestFailed as exc:
            last = exc
            failed.add(where)
            if not exc.retryable:
                raise
    raise last if last is not None else NetworkError(none_left)
