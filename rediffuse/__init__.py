"""rediffuse: rotation-equivariant diffusion for multi-focus image fusion.

Modules (each small, importable on its own):

- ``groups``       how images and regular fields rotate under C_m
- ``bconv``        filter bases (B-Conv, F-Conv, G-Conv) and the equivariant conv layers
- ``equivariance`` one error measure shared by tests and notebooks
"""

__version__ = "0.1.0"
