"""The secure-computation engine: 3-party replicated secret sharing over Z_2^64 on torch (see DESIGN.md)."""
