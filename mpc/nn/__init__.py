"""Secure Transformer ops on fixed-point shares: linear, embedding, activations, softmax, norms, attention.

Each op takes the party first and an explicit `ApproxProfile` where it approximates; ops open nothing.
"""
