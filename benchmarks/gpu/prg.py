"""The PRG's keystream made on a GPU (mpc/aes.py): equality with `cryptography`, and throughput against the host path.

    python benchmarks/gpu/prg.py OUT_DIR                                  # on a CUDA machine; writes OUT_DIR/prg.json
    python benchmarks/gpu/prg.py OUT_DIR --device cpu --max-bytes 4194304 # the same comparison on the CPU

First the checks (the script exits with status 1 if one fails, after writing the JSON): for random keys, initial
counters and offsets, `AesCtr`'s keystream on the device equals `cryptography`'s AES-128-CTR, draws up to the largest
size included; and the PRG with its keystream made on the device draws the same ring and byte tensors as the host
path for a mix of draw sizes.
Then, for draws from 1 KiB to `--max-bytes` (64 MiB by default), the median time per draw of:

- `device`: `PRG(seed, device, on_device=True)` (the default on CUDA), the keystream made on the device with torch
  integer ops, each loop of draws synchronized at its end;
- `host_copy`: `PRG(seed, device, on_device=False)`, `cryptography` on the host and a copy to the device (on the CPU:
  no copy);
- `graph` (CUDA only): one draw captured as a CUDA graph and replayed, what a replayed schedule would pay;

and, at the largest size, the device path's time for several `chunk_blocks`. Figures are for the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secureinfer.mpc.aes import AesCtr
from secureinfer.mpc.prg import PRG, SEED_BYTES

KIB, MIB = 1 << 10, 1 << 20
SIZES = [KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB, 64 * MIB]
CHUNK_SWEEP = [1 << 14, 1 << 16, 1 << 18, 1 << 20]


def reference_keystream(key: bytes, initial_counter: int, offset: int, nbytes: int) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(initial_counter.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(offset + nbytes))[offset:]


def check_keystreams(device: torch.device, max_bytes: int, rng: random.Random) -> list[str]:
    """Failures of AesCtr on `device` against `cryptography`, for random keys, counters, offsets and sizes."""
    failures = []
    counters = [0, (1 << 64) - 2, (1 << 128) - 1, rng.getrandbits(128)]
    cases = [(0, 0), (0, 1), (0, 15), (0, 16), (0, 17), (5, 1000), (16, 4 * KIB + 3), (rng.randrange(16), max_bytes)]
    for trial in range(8):
        key, initial_counter = os.urandom(16), counters[trial % len(counters)]
        for offset, nbytes in cases:
            got = AesCtr(key, device, initial_counter=initial_counter).keystream(offset, nbytes).cpu().numpy()
            if got.tobytes() != reference_keystream(key, initial_counter, offset, nbytes):
                failures.append(f"AesCtr key={key.hex()} counter={initial_counter:#x} offset={offset} n={nbytes}")
    return failures


def check_prg_draws(device: torch.device, rng: random.Random) -> list[str]:
    """Failures of PRG on `device` against the host path for mixed draw sizes (positions not multiples of 16)."""
    failures = []
    for _ in range(4):
        seed = os.urandom(SEED_BYTES)
        on_device, host = PRG(seed, device, on_device=True), PRG(seed, "cpu")
        for step in range(200):
            nbytes = rng.choice([0, 1, 7, 8, 15, 16, 17, 24, 100, 4096, 65536 + 8, MIB + 3])
            if nbytes % 8 == 0:
                got, want = on_device.ring((nbytes // 8,)), host.ring((nbytes // 8,))
            else:
                got, want = on_device.uint8((nbytes,)), host.uint8((nbytes,))
            if not torch.equal(got.cpu(), want):
                failures.append(f"PRG seed={seed.hex()} step={step} n={nbytes}")
                break
    return failures


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_draw(device: torch.device, draw: Callable[[], object], nbytes: int) -> float:
    """Median seconds per draw over a few timed loops (each loop synchronized at its end)."""
    draw()
    synchronize(device)
    per_loop = max(1, min(200, (32 * MIB) // nbytes))
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_loop):
            draw()
        synchronize(device)
        timings.append((time.perf_counter() - start) / per_loop)
    return statistics.median(timings)


def captured_draw(device: torch.device, nbytes: int) -> tuple[Callable[[], object], bool]:
    """One keystream draw captured as a CUDA graph: (replay, whether its output equals `cryptography`'s)."""
    key = os.urandom(16)
    aes = AesCtr(key, device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        aes.keystream(3, nbytes)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = aes.keystream(3, nbytes)
    graph.replay()
    synchronize(device)
    return graph.replay, out.cpu().numpy().tobytes() == reference_keystream(key, 0, 3, nbytes)


def measure(device: torch.device, nbytes: int) -> dict[str, object]:
    seed = os.urandom(SEED_BYTES)
    on_device, host_copy = PRG(seed, device, on_device=True), PRG(seed, device, on_device=False)
    row: dict[str, object] = {"bytes": nbytes}
    draws = {"device": lambda: on_device.uint8((nbytes,)), "host_copy": lambda: host_copy.uint8((nbytes,))}
    for name, draw in draws.items():
        seconds = seconds_per_draw(device, draw, nbytes)
        row[f"{name}_us"], row[f"{name}_MBps"] = round(seconds * 1e6, 1), round(nbytes / seconds / 1e6, 1)
    if device.type == "cuda":
        try:
            replay, equal = captured_draw(device, nbytes)
            seconds = seconds_per_draw(device, replay, nbytes)
            row.update(graph_us=round(seconds * 1e6, 1), graph_MBps=round(nbytes / seconds / 1e6, 1), graph_equal=equal)
        except Exception as error:  # a capture that fails is a finding to report, not a crash
            row["graph_error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(row), flush=True)
    return row


def chunk_sweep(device: torch.device, nbytes: int) -> list[dict[str, object]]:
    rows = []
    for chunk_blocks in CHUNK_SWEEP:
        aes, position = AesCtr(os.urandom(16), device, chunk_blocks=chunk_blocks), [0]

        def draw() -> None:
            aes.keystream(position[0], nbytes)
            position[0] += nbytes

        seconds = seconds_per_draw(device, draw, nbytes)
        rows.append({"chunk_blocks": chunk_blocks, "bytes": nbytes, "us": round(seconds * 1e6, 1),
                     "MBps": round(nbytes / seconds / 1e6, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for prg.json")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--max-bytes", type=int, default=64 * MIB, help="largest draw (default 64 MiB)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run it on a GPU machine, or pass --device cpu")
    sizes = [size for size in SIZES if size <= args.max_bytes]
    rng = random.Random(0)
    failures = check_keystreams(device, sizes[-1], rng) + check_prg_draws(device, rng)
    print(f"equality: {'ok' if not failures else failures}", flush=True)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": describe(device),
        "torch": torch.__version__,
        "cryptography": cryptography.__version__,
        "equal": not failures,
        "failures": failures,
        "draws": [measure(device, size) for size in sizes],
        "chunk_sweep": chunk_sweep(device, sizes[-1]),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "prg.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out_dir / 'prg.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
