"""Errors shared by the anchor benchmarks."""


class AnchorInstallError(RuntimeError):
    """An anchor's virtual environment could not be built."""
