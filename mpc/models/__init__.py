"""The secure models: BERT, GPT-2 and LLaMA on three parties' replicated shares, and their sessions.

  secure_ops.py   the secure backend of the shared model definitions (secureinfer.models.arch)
  blocks.py       prepared weights, attention with a secret KV cache, embedding and LM head
  bert.py, gpt2.py, llama.py   each family's secure model
  weights.py      publishing a model's weights as secret shares (owner and parties)
  serving.py      the session protocol between a client and the parties (party side and client side)
  session.py      whole sessions on the in-process runtime (owner, client and three parties as threads)
  batching.py     concurrent requests' steps stacked into one secure forward
  trace.py        where a secure forward spends its time, bytes and rounds
"""
