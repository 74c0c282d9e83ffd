"""secureinfer: privacy-preserving, decentralized Transformer inference (SDK and CLI live here)."""

__version__ = "0.1.0"
