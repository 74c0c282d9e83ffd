"""One secure BERT-base-shaped forward (random weights drawn like BERT's, 1 x 128 token ids) on one device, for each
PRG path; time, rounds and bytes per party from the session report, and the error against the float64 plaintext
model. Needs no packaged checkpoint or tokenizer, so it runs on a bare GPU machine.

    python benchmarks/gpu/forward.py OUT_DIR [--device cuda] [--repeat 2] [--prg host,default]

Writes OUT_DIR/forward.json. The first session on a device also pays its warm-up (kernels, tables), so the median of
`--repeat` sessions after one untimed session is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from secureinfer.lab.bench.model import bert_base_params

from secureinfer.mpc.models import session
from secureinfer.mpc.party import EngineConfig
from secureinfer.plaintext import reference as plaintext

from prgpath import prg_path, write_rows  # benchmarks/gpu/prgpath.py, beside this script

def _ids(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Public benchmark token ids (a fixed pattern over BERT's vocabulary, not a secret) and a full mask."""
    ids = (torch.arange(length, dtype=torch.int64) * 7919 + 101) % 30522
    return ids.reshape(1, length), torch.ones(1, length, dtype=torch.int64)


def _measure(device: str, repeat: int) -> dict:
    cfg, params = bert_base_params()
    params = {k: v.double() for k, v in params.items()}
    ids, mask = _ids(128)
    config = EngineConfig(device=device)
    session.secure_encode(cfg, params, ids, mask, output="hidden", config=config)  # warm-up
    reports, hidden = [], None
    for _ in range(repeat):
        hidden, report = session.secure_encode(cfg, params, ids, mask, output="hidden", config=config)
        reports.append(report.steps[0])
    want = plaintext.bert_forward(cfg, params, ids, mask)
    return {"seconds": statistics.median(r.seconds for r in reports), "rounds": reports[-1].rounds,
            "bytes_per_party": list(reports[-1].bytes_per_party),
            "max_abs_diff": float((hidden.double().cpu() - want).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--prg", default="host,default", help="PRG paths, comma-separated: host, device, default")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in args.prg.split(","):
        with prg_path(path):
            row = {"model": "bert-base", "prg": path, "device": args.device, **_measure(args.device, args.repeat)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_rows(args.out / "forward.json", rows)

if __name__ == "__main__":
    main()
