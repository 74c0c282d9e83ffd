"""The per-op table: secureinfer's `bench ops` and CrypTen's ops mode on the same ops and shapes, in one run."""

from __future__ import annotations

import sys
from typing import Any, Callable

from .harness import HERE, Environment, HarnessConfig, RunnerFailed, run_json


def _run_json(cmd: list[str], out, cfg: HarnessConfig, what: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    log(f"[ops] {what} ...")
    try:
        return run_json(cmd, out, cfg)
    except RunnerFailed as exc:
        log(f"[ops] {what} failed: {exc}")
        return None


def pair(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by op name present in both, with CrypTen's time and bytes over ours (above 1: ours is faster/smaller)."""
    by_name = {r["name"]: r for r in theirs}
    rows = []
    for r in ours:
        t = by_name.get(r["op"])
        if t is None:
            continue
        ours_b, their_b = max(r["bytes_per_party"]), max(t["bytes_per_party"])
        rows.append({"op": r["op"], "shapes": r["shapes"],
                     "secureinfer": {"seconds": r["seconds"], "rounds": r["rounds"], "bytes_max": ours_b,
                                     "max_error": r["max_error"], "error_unit": r["error_unit"]},
                     "crypten": {"seconds": t["seconds"], "rounds": t.get("rounds"), "bytes_max": their_b,
                                 "max_error": t.get("max_error_ulp"),
                                 "error_unit": f"ulp (2^-{t.get('ulp_bits', 16)})"},
                     "time_ratio": t["seconds"] / r["seconds"] if r["seconds"] else None,
                     "bytes_ratio": their_b / ours_b if ours_b else None})
    return rows


def compare_ops(env: Environment | None, cfg: HarnessConfig, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Both ops tables and their pairing; None when CrypTen's environment is missing or a side failed."""
    if env is None or env.python is None:
        return None
    ours_out, theirs_out = cfg.work_dir / "secureinfer-ops.json", cfg.work_dir / "crypten-ops.json"
    ours = _run_json([sys.executable, "-m", "secureinfer.cli", "bench", "ops", "--repeat", str(max(cfg.repeats, 3)),
                      "--json", str(ours_out)], ours_out, cfg, "secureinfer bench ops", log)
    theirs = _run_json([str(env.python), str(HERE / "crypten_runner.py"), "--ops", "--out", str(theirs_out),
                        "--repeats", str(max(cfg.repeats, 3))], theirs_out, cfg, "crypten ops", log)
    if ours is None or theirs is None:
        return None
    return {"rows": pair(ours["results"], theirs["ops"]), "crypten_config": theirs.get("config"),
            "crypten_notes": theirs.get("notes")}
