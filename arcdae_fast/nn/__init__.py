"""nn.Module wrappers of the public ops."""

from .attn_pool import AttentionPool, PartHead

__all__ = ["AttentionPool", "PartHead"]
