"""arcdae_fast: a fast training engine for ArcDAE-style diffusion autoencoders."""

__version__ = "0.1.0"
