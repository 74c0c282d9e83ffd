"""The plaintext execution: the model definitions (secureinfer.models) on torch, in the clear.

  torch_ops.py   the torch backend of the model definitions
  reference.py   float64 reference forwards (what the secure models are checked against) and PlainModel
  serving.py     a plaintext worker's side of a public session (the same step protocol as a secure committee's)
  fast/          the fast decoder: packed weights, static KV cache, CUDA graphs, batching, speculative decoding

For open models and non-private prompts only: whoever runs this sees the tokens and every activation.
"""
