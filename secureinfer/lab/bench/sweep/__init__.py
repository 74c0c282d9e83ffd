"""`secureinfer bench sweep`: measure a grid of requests x strategies x environments into the performance store.

The grid is (model, seq_len, batch, gen_tokens) x strategies x devices x simulated links (secure runs only); each
run writes one row (secureinfer.perfstore's RunRecord) with the request's features, the node's
(secureinfer.nodes.capability.measure) and the link's, the strategy (its JSON executes it again), and the measured
outcome: prefill, per-token and total seconds, rounds and bytes per party, peak memory, accuracy against the float64
plaintext reference.

How a run is measured:
  secure     secureinfer.mpc.models.session on three in-process parties (plus model owner and client), with the
             strategy's approximation profile, fixed point (EngineConfig(fxp=FixedPoint(frac_bits))) and device,
             and the link simulated by secureinfer.mpc.comm.memory's LinkModel between parties and client (the
             owner's weight publishing is set-up and is not shaped). Decoders: secure_generate (prefill then one step
             per new token, greedy, no EOS stop); encoders: secure_encode (sentence embedding). Times are the
             client-observed step times.
  plaintext  decoders run on the fast plaintext engine (`secureinfer.plaintext.fast.FastDecoder`, through
             `_FastAdapter`) when it is importable: precision, int8, static cache, batching worker, CUDA graphs,
             compile, early-exit speculation. Encoders (and decoders without the fast engine) run the reference
             forwards (secureinfer.plaintext.reference) in the strategy's precision (`_ComputeDtype`). Parameters are
             cast or packed once outside the clock (load_s); one untimed warm-up, then the median of up to five
             timed runs, perf_counter with CUDA synchronised. Strategies no engine here can run are skipped, and
             why goes to the store's meta table (`skipped:NAME`) and the sweep's output.
Accuracy: decoders compare each step's last-position logits with the float64 reference's, teacher-forced on the
run's own tokens (max_abs_err, min over rows of cosine), and the greedy tokens with the reference's greedy tokens
(tokens_equal); encoders compare sentence embeddings. The reference runs once per case, outside every clock.
A run that raises is recorded with status 'error' and the message, and the sweep goes on. Rows whose key is already
in the store are skipped (resumable); a key hashes the case, the strategy, the link, the repeat index and the
environment (host label, device, CPU model), not the measured figures.

Layout: models.py (the models, their loaders and inputs), grid.py (cases, links, runs, the grids and their
strategies), env.py (the node, run keys, the recorded environment), accuracy.py (the float64 reference and the
comparison, through secureinfer.lab.bench.metrics), measure.py (one run: secure, plaintext, fast engine), run.py
(run_sweep, rekey, the CLI entry point).
"""

from .accuracy import Reference, reference
from .env import Node, key_for, measure_node, strategy_key
from .grid import (FRAC_BITS, GRID_SPECS, GRIDS, LINKS, PROFILES, Case, GridSpec, Link, Run,
                   available_devices, build_grid, fast_engine, fast_unsupported, public_weights_support)
from .measure import measure
from .models import MODELS, ModelSpec, token_inputs, load_model
from .run import Progress, SweepResult, main, rekey, release_models, run_sweep, warm_up

__all__ = [
    "FRAC_BITS", "GRID_SPECS", "GRIDS", "LINKS", "MODELS", "PROFILES",
    "Case", "GridSpec", "Link", "ModelSpec", "Node", "Progress", "Reference", "Run", "SweepResult",
    "available_devices", "build_grid", "token_inputs", "fast_engine", "fast_unsupported", "key_for", "load_model",
    "main", "measure", "measure_node", "public_weights_support", "rekey", "reference", "release_models",
    "run_sweep", "strategy_key", "warm_up",
]
