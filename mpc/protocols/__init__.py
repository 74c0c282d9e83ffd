"""Protocols on replicated shares: each module lists its steps, rounds and bytes, and the paper it follows."""
