"""Side-by-side benchmarks of secureinfer against the systems users would pick instead.

One command, `secureinfer bench anchors` (from any folder; `python -m benchmarks.anchors` from the checkout's root),
runs on the same workloads, one after another in one run:
  secureinfer   its secure forward on three in-process parties (secureinfer_runner.py)
  spu           SecretFlow SPU running PUMA's recipes (spu_runner.py, in its own venv built by spu_env.py)
  crypten       CrypTen 0.4.1 with its import fixes kept inside its own venv (crypten_runner.py with its model,
                crypten_model.py, and its parties, crypten_parties.py; the venv: crypten_env.py)
  transformers  Hugging Face transformers in plaintext (transformers_runner.py)
Workloads (workloads.py): all-MiniLM-L6-v2 at 128 tokens (real weights), a BERT-base-shaped encoder at 128 tokens
and a GPT-2-base-shaped decoder at 32 tokens, written once as W.npz + W.json that every runner reads.

Runner protocol (every system): `<python> <runner> --workload W.json --out R.json --output-npy R.npy --repeats N`
writes R.json {"anchor", "anchor_version", "workload", "seconds" (median), "seconds_all", "compile_seconds",
"timed" (what the time covers), "bytes_per_party" (sent by each party in the timed forward), "rounds",
"rounds_what", "peak_rss_mb", "config", "notes"} and R.npy, the opened output in float64 (BERT: last hidden states
(1, T, H); GPT-2: the last position's logits (1, V)). The harness (harness.py) computes accuracy against the float64
plaintext reference (accuracy.py, with the figures of secureinfer.lab.bench.metrics), the ratios to secureinfer, and
projections to real networks (projection.py); report.py prints the tables and writes them as Markdown for
BENCHMARKS.md. A result's "command" reruns it from the repository root; files it wrote outside the working directory
are named under the placeholder folder OUT. The anchors' venvs and the work files go under the checkout's .anchors/
unless --env-dir and --work-dir say otherwise; every runner runs from the checkout's root.
"""
