"""Fixed-point approximations of nonlinear functions on shares: polynomials, exp, reciprocal, rsqrt.

Every approximation states its domain, max error and knobs; the knobs live in one `ApproxProfile` (profile.py),
passed explicitly by the caller (`profile.ACCURATE`, `profile.FAST`, `profile.LEAN`, or a `dataclasses.replace` of one).
"""

from .profile import ACCURATE, FAST, LEAN, PROFILES, ApproxProfile, EvenSplit, get

__all__ = ["ACCURATE", "FAST", "LEAN", "PROFILES", "ApproxProfile", "EvenSplit", "get"]
