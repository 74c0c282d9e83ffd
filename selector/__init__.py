"""The meta-learned strategy selector (issue 6)."""
