"""`jitgrad.scipy`: scipy's names over jitgrad's ops, as `jax.scipy` (so far `special`)."""

from jitgrad.scipy import special

__all__ = ["special"]
