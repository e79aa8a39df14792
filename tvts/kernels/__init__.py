"""Attention for every transformer in the project goes through :func:`attention`."""
from tvts.kernels.attention import attention, attention_reference, set_default_backend

__all__ = ["attention", "attention_reference", "set_default_backend"]
