"""The SDK's membership view: a request waits for a committee the view shows only in part, and only then."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from secureinfer.client import member
from secureinfer.client.member import Member


@dataclass
class _Hosted:
    model_id: str
    committee_id: str


@dataclass
class _Record:
    models: list[_Hosted] = field(default_factory=list)


@dataclass
class _Table:
    """A membership view as far as the settle logic reads it: live records, the whole committees, and (all valid)
    owner signatures."""

    records: list[_Record]
    whole: list[str]

    def live(self) -> list[_Record]:
        return self.records

    def choose_committees(self, model_id: str) -> list[str]:
        return self.whole

    def resolve(self, model: str, owner: str | None = None) -> str:
        return model

    def claims(self, model_id: str) -> list[tuple[str, _Hosted]]:
        return [("n", h) for r in self.records for h in r.models if h.model_id == model_id]

    def owner_problem(self, hosted: _Hosted) -> str | None:
        return None  # every claim here carries its owner's valid signature


def _member(views: list[_Table]) -> tuple[Member, list[int]]:
    """A Member whose successive membership() calls return `views` (the last one repeats); and the call count."""
    calls = [0]
    m = Member.__new__(Member)

    def membership() -> _Table:
        calls[0] += 1
        return views[min(calls[0], len(views)) - 1]

    m.membership = membership  # type: ignore[method-assign]
    return m, calls


PART = _Table([_Record([_Hosted("smollm2", "c1")]), _Record()], whole=[])
WHOLE = _Table([_Record([_Hosted("smollm2", "c1")])] * 3, whole=["c1"])


def test_a_committee_seen_in_part_is_waited_for() -> None:
    m, calls = _member([PART, PART, WHOLE])
    assert m.settled_membership("smollm2", settle_s=5.0) is WHOLE
    assert calls[0] == 3


def test_an_unknown_model_is_not_waited_for() -> None:
    m, calls = _member([PART])
    start = time.monotonic()
    assert m.settled_membership("unknown", settle_s=5.0) is PART
    assert calls[0] == 1 and time.monotonic() - start < 1.0


def test_a_committee_that_stays_in_part_gives_up_after_the_settle_time() -> None:
    m, calls = _member([PART])
    start = time.monotonic()
    assert m.settled_membership("smollm2", settle_s=0.6) is PART
    assert 0.6 <= time.monotonic() - start < 3.0 and calls[0] >= 2
    assert member.VIEW_SETTLE_S >= 5.0  # longer than a few gossip rounds of a busy node
