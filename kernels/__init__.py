"""Fused ops for fastgan's networks.

Each op has a plain-PyTorch reference beside it. The networks call the ops through this package
so that a Triton implementation can replace the reference without touching the models.
"""
from kernels.linear_leaky_relu import LinearLeakyReLU, linear_leaky_relu, linear_leaky_relu_reference

__all__ = ["LinearLeakyReLU", "linear_leaky_relu", "linear_leaky_relu_reference"]
