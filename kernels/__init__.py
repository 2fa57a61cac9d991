"""Fused ops for fastgan's networks, each beside its plain-PyTorch reference.

The networks call these ops; `kernels.dispatch.set_backend` picks Triton or PyTorch
(`--kernels auto|triton|torch`). Each op is a `torch.library.triton_op`, so torch.compile and CUDA
graphs see through it, with its autograd formula registered beside it.
"""
from kernels.dispatch import BACKENDS, get_backend, reference_math, set_backend, use_custom_ops
from kernels.linear_leaky_relu import Linear, LinearLeakyReLU, linear_leaky_relu, linear_leaky_relu_reference
from kernels.matmul import fused_matmul_reference, matmul_mask_out
from kernels.penalty_norm import penalty_norm, penalty_norm_reference

__all__ = [
    "BACKENDS", "Linear", "LinearLeakyReLU", "fused_matmul_reference", "get_backend", "linear_leaky_relu",
    "linear_leaky_relu_reference", "matmul_mask_out", "penalty_norm", "penalty_norm_reference", "reference_math",
    "set_backend",
    "use_custom_ops",
]
