"""The selector figures README.md quotes are those of the committed evaluation files, not typed in."""

from __future__ import annotations

import json
import re

import pytest

from .layers import REPO

EVALS = {"combination": REPO / "benchmarks" / "selector" / "eval.json",
         "network": REPO / "benchmarks" / "selector" / "eval-network.json"}


def _figures(report: dict) -> dict[str, str]:
    """The README's figures of one evaluation report, formatted as the README writes them."""
    summary = report["summary"]
    ratio = {name: f"{summary[name]['median_ratio']:.3f}x" for name in ("selector", "cost_model", "predictor")}
    return {**ratio,
            "selector below fixed": f"{100 * report['targets']['selector_below_fixed_median']:.1f}%",
            "oracle below fixed": f"{100 * (1 - summary['oracle']['median_s'] / summary['fixed']['median_s']):.1f}%",
            "secret": f"{report['by_kind']['secret']['selector']['median_ratio']:.3f}x"}


def _paragraph(readme: str, start: str) -> str:
    """The README bullet that begins with `start`, joined into one line."""
    match = re.search(rf"^- {re.escape(start)}.*?(?=^- |^\s*$)", readme, flags=re.M | re.S)
    assert match, f"README.md has no bullet starting {start!r}"
    return " ".join(match.group(0).split())


@pytest.mark.parametrize("kind, start, names", [
    ("combination", "per (model, hardware, link) combination",
     ("selector", "secret", "selector below fixed", "oracle below fixed", "cost_model", "predictor")),
    ("network", "at network level",
     ("selector", "cost_model", "predictor", "selector below fixed", "oracle below fixed")),
])
def test_readme_quotes_the_committed_selector_evaluation(kind: str, start: str, names: tuple[str, ...]) -> None:
    report = json.loads(EVALS[kind].read_text())
    assert report["command"].startswith("secureinfer selector eval ") and EVALS[kind].name in report["command"]
    text = _paragraph((REPO / "README.md").read_text(), start)
    figures = _figures(report)
    missing = {name: figures[name] for name in names if figures[name] not in text}
    assert not missing, f"README's {kind} figures differ from {EVALS[kind].name}: {missing} not in {text!r}"


def test_readme_quotes_the_committed_plaintext_decoder_run() -> None:
    """The fast decoder's H200 figures: its batch-1 decode step and its speed-up over `generate` at 1 and 32 rows."""
    results = json.loads((REPO / "benchmarks" / "results" / "plaintext-h200-bf16.json").read_text())["results"]
    fast = {r["batch"]: r for r in results if r["engine"] == "fast"}
    text = " ".join((REPO / "README.md").read_text().split())
    quoted = [f"{fast[1]['decode_step_ms']:.1f} ms per decode step at batch 1",
              f"{fast[1]['speedup_decode']:.1f}x faster than `generate`", f"{fast[32]['speedup_decode']:.1f}x at 32"]
    missing = [q for q in quoted if q not in text]
    assert not missing, f"README's plaintext decoder figures differ from plaintext-h200-bf16.json: {missing}"
