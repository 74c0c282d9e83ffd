"""Models: checkpoint loading (HF directories, GGUF), plaintext float64 reference forwards, and weight publishing.

This layer knows nothing of gRPC, the selector or the CLI (see DESIGN.md, "Layers").
"""
