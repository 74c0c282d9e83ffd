"""What a session's steps may ask of a hosted model, in either execution (secure committee or plaintext worker):
the outputs each family serves, the names of a session's client and public worker, and the error for a step that
cannot be served."""

from __future__ import annotations

CLIENT = "client"  # the client's name on a session's channel
PUBLIC_WORKER = "P0"  # the one plaintext worker of a public session
ENCODE_OUTPUTS = ("embedding", "pooled", "hidden", "logits")  # encoders (BERT)
DECODE_OUTPUTS = ("all", "last")  # decoders: every position's logits, or the last position's


class RequestError(ValueError):
    """A client's step that cannot be served: wrong token width, too many positions, malformed metadata."""
