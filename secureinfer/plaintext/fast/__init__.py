"""Fast plaintext decoding (GPT-2, LLaMA): packed weights, static/dynamic KV cache, CUDA graphs, batching, speculation.

    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="bf16", static_cache=True, cuda_graphs=True,
                                                     device="cuda"), max_len=256)
    tokens = dec.generate(prompt_ids, max_new_tokens=64)            # (B, n), greedy
    with BatchingWorker(dec) as worker:                              # continuous batching of concurrent requests
        tokens = worker.submit(prompt, 64).result()
"""

from .batching import BatchingWorker
from .decoder import FastDecoder, finish_eos
from .weights import quantize_int8

__all__ = ["BatchingWorker", "FastDecoder", "finish_eos", "quantize_int8"]
