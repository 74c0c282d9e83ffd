"""Benchmarks behind `secureinfer bench`."""
