"""CUDA graphs of one decode step, captured once per batch bucket and replayed per token.

A step function `fn(G, key_len)` reads its inputs from static buffers and returns static output tensors; each bucket
size G is warmed up on a side stream (so lazy initialisation, autotuning and allocator growth happen outside the
capture), then captured into a `torch.cuda.CUDAGraph`. All buckets share one memory pool, captured largest first.
A request for n rows replays the smallest bucket >= n; the rows in between are padding the caller has parked.
"""

from __future__ import annotations

from typing import Callable

import torch

StepFn = Callable[[int, int], tuple[torch.Tensor, ...]]


def default_buckets(max_batch: int) -> list[int]:
    """Powers of two up to max_batch, and max_batch itself."""
    sizes, g = [], 1
    while g < max_batch:
        sizes.append(g)
        g *= 2
    return sorted(set(sizes + [max_batch]))


class StepGraphs:
    """One captured decode step per bucket size; `run(n)` replays the smallest bucket holding n rows."""

    def __init__(self, fn: StepFn, sizes: list[int], key_len: int, device: torch.device,
                 warmup: int = 2) -> None:
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.sizes = sorted(set(sizes))
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, tuple[torch.Tensor, ...]] = {}
        pool = None
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for g in reversed(self.sizes):
                    for _ in range(warmup):
                        fn(g, key_len)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            for g in reversed(self.sizes):  # largest first: the smaller ones reuse its pool
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = fn(g, key_len)
                pool = graph.pool() if pool is None else pool
                self.graphs[g], self.outputs[g] = graph, out
            torch.cuda.synchronize()

    def bucket(self, n: int) -> int:
        """The smallest captured batch size >= n."""
        for g in self.sizes:
            if g >= n:
                return g
        raise ValueError(f"{n} rows exceed the largest captured batch {self.sizes[-1]}")

    def run(self, g: int) -> tuple[torch.Tensor, ...]:
        """Replay bucket g; returns its static outputs (overwritten by the next replay)."""
        self.graphs[g].replay()
        return self.outputs[g]
