"""Shipped model weights (``*.pt``) and their model card (``README.md``); see ``rediffuse.fuse.SHIPPED_MODELS``."""
