"""The secure-computation engine: 3-party replicated secret sharing over Z_2^64 on torch (docs/DESIGN.md, "Layers").

  ring.py, prg.py   Z_2^64 and fixed point on int64 tensors (CPU and CUDA); the AES-CTR PRG and X25519 seeds
  comm/             the Channel interface, an in-memory network with shaped links, the leakage audit
  shares.py         replicated arithmetic (AShare) and boolean (BShare) shares
  party.py          one party: index, channel, pairwise PRGs, engine configuration
  runtime.py        one program run as three parties (threads) over an in-memory network
  protocols/        mul, trunc, boolean (A2B), compare, select, b2a, sharing, reveal
  approx/           exp, reciprocal, rsqrt, polynomials, segments; the approximation profiles
  nn/               secure ops: linear, embedding, activations, softmax, norms, attention
  models/           the secure models (BERT, GPT-2, LLaMA) and their sessions
"""
