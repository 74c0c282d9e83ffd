"""Models: checkpoint loading (HF directories, GGUF), plaintext float64 reference forwards, and weight publishing.

BERT, GPT-2 and LLaMA are defined once (arch.py, against the backend interface in ops.py) and executed by a secure
backend (secure_ops.py: bert.py, gpt2.py, llama.py) and a plaintext one (torch_ops.py: plaintext.py, fast/).

This layer knows nothing of gRPC, the selector or the CLI (see DESIGN.md, "Layers").
"""
