"""fastgan's Triton kernels compiled for Hopper (sm_90: the H100 and H200) by the installed Triton, on
a machine without a GPU: every launch the ops make on the MLP layer shapes, with the fixed config,
and every autotuning config on the forward GEMM and the penalty norm.

The interpreter (tests/triton) checks what the kernels compute but compiles nothing, so an error
only the compiler sees (an argument it cannot bind, a tile that needs more shared memory than the
chip has, registers spilled to memory) would otherwise wait for a GPU session. The launches are
recorded from the ops themselves, called on CPU tensors with the launch replaced by a recorder, so
a specialization an op adds is compiled here without anyone listing it.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import tempfile
from typing import Any

import pytest
import torch

from kernels._triton import AVAILABLE, triton

pytestmark = pytest.mark.skipif(not (AVAILABLE and importlib.util.find_spec("triton.backends.nvidia")),
                                reason="needs triton with its NVIDIA backend")

# the modules (in the package, `penalty_norm` and the like are the ops)
adam, llr, matmul, penalty_norm = (importlib.import_module(f"kernels.{name}")
                                   for name in ("adam", "linear_leaky_relu", "matmul", "penalty_norm"))
SM90_SHARED_BYTES = 232_448  # the most shared memory one thread block may have on an H100/H200 (227 KB)
POINTER = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}
Launch = tuple[Any, tuple, dict]  # (kernel, positional arguments, keyword arguments)


class Recorder:
    """Stands in for `wrap_triton(kernel)` or `kernel`: `recorder[grid](*args, **kwargs)` records."""

    def __init__(self, launches: list[Launch], kernel: Any):
        self.launches, self.kernel = launches, kernel

    def __getitem__(self, grid: Any):
        return lambda *args, **kwargs: self.launches.append((self.kernel, args, kwargs))


@pytest.fixture(scope="module")
def launches() -> list[Launch]:
    """Every launch of every op in float32 (TF32 allowed, as in training) and bfloat16: on the critic's
    784 -> 256 layer, and on G's first layer (K = 100, not a multiple of 16: the unaligned loads);
    Adam on a network's worth of tensors (one of one element)."""
    recorded: list[Launch] = []
    patch = pytest.MonkeyPatch()
    for module in (llr, matmul, penalty_norm):
        patch.setattr(module, "runs_triton", lambda t: True)
    for module in (matmul, penalty_norm):
        patch.setattr(module, "wrap_triton", lambda kernel: Recorder(recorded, kernel))
    patch.setattr(adam, "_adam_kernel", Recorder(recorded, adam._adam_kernel))
    allow_tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, True
    try:
        for dtype in (torch.float32, torch.bfloat16):
            x, w, b = (torch.randn(*shape, dtype=dtype) for shape in ((64, 784), (256, 784), (256,)))
            for bias in (b, None):
                out = llr._forward(x, w, bias, 0.2)
            for slope, needs in ((0.2, (True, True, True)), (1.0, (True, True, True)), (0.2, (False, True, False))):
                llr._backward(out, out, x, w, slope, *needs)  # slope 1: a plain Linear, no mask to read
            matmul.matmul_mask_out(x, w.T, torch.randn(64, 256, dtype=dtype), 0.2)
            penalty_norm.penalty_norm(out, w, 2 / 64)
            z, w_g, b_g = (torch.randn(*shape, dtype=dtype) for shape in ((64, 100), (1024, 100), (1024,)))
            out_g = llr._forward(z, w_g, b_g, 0.0)  # ReLU
            llr._backward(out_g, out_g, z, w_g, 0.0, False, True, True)  # no gradient for the noise
        params = [torch.randn(n) for n in (200_704, 256, 65_536, 256, 256, 1)]
        adam.adam_step(params, [torch.randn_like(p) for p in params], [torch.zeros_like(p) for p in params],
                       [torch.zeros_like(p) for p in params], [torch.zeros(()) for _ in params], 1e-3, 0.5, 0.999, 1e-8)
    finally:
        patch.undo()
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return recorded


def name(kernel: Any) -> str:
    return getattr(kernel, "fn", kernel).__name__


def launch_of(launches: list[Launch], kernel: Any, dtype: torch.dtype, **kwargs: Any) -> Launch:
    """The first recorded launch of `kernel` on `dtype` operands with these keyword arguments."""
    found = [launch for launch in launches if launch[0] is kernel and launch[1][0].dtype == dtype
             and kwargs.items() <= launch[2].items()]
    assert found, f"no launch of {name(kernel)} on {dtype} with {kwargs}"
    return found[0]


def fixed_config(kernel: Any) -> Any:
    """The one config the kernel runs with FASTGAN_AUTOTUNE=0 (the GPU tests); None: no autotuner."""
    if not hasattr(kernel, "configs"):
        return None
    module = importlib.import_module(kernel.fn.__module__)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "AUTOTUNE", False)
        (config,) = module._configs()
    return config


def specialize(launch: Launch, config: Any = None) -> tuple[Any, dict, dict, dict]:
    """(JITFunction, signature, constants, attributes) of a launch as Triton specializes it at run time:
    an integer equal to 1 becomes a constant; a pointer or an integer divisible by 16 says so, which
    lets loads vectorize. `config`: an autotuner's config (its tile sizes become constants)."""
    kernel, args, kwargs = launch
    fn = kernel.fn if hasattr(kernel, "configs") else kernel  # the JITFunction, under its autotuner if any
    values = dict(zip(fn.arg_names, args)) | kwargs | (config.kwargs if config else {})
    signature, constexprs, attrs = {}, {}, {}
    for i, arg in enumerate(fn.arg_names):
        value = values[arg]
        if i in fn.constexprs or (type(value) is int and value == 1):
            signature[arg], constexprs[(i,)] = "constexpr", value
            continue
        if isinstance(value, torch.Tensor):
            signature[arg], aligned = POINTER[value.dtype], value.data_ptr() % 16 == 0
        else:
            signature[arg] = "fp32" if isinstance(value, float) else "i32" if abs(value) < 2**31 else "i64"
            aligned = type(value) is int and value % 16 == 0
        if aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return fn, signature, constexprs, attrs


def compile_for_sm90(launch: Launch, config: Any = None) -> Any:
    """triton.compile of one launch, specialized as at run time, for sm_90 under `config`."""
    from triton.backends.compiler import GPUTarget  # imported here: triton may be the stand-in
    from triton.compiler import ASTSource

    fn, signature, constexprs, attrs = specialize(launch, config)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages} if config else {}
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32), options=options)


def stack_bytes(compiled: Any) -> int:
    """The per-thread stack frame of the compiled kernel (registers spilled to memory), read by the
    cuobjdump Triton uses (the one its wheel ships, or $TRITON_CUOBJDUMP_PATH)."""
    tool = triton.knobs.nvidia.cuobjdump.path
    if not tool:
        pytest.skip("no cuobjdump to read the register usage with")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"STACK:(\d+)", usage).group(1))


def check_fits(launch: Launch, config: Any) -> None:
    """The launch under `config` fits one thread block's shared memory and spills no registers."""
    compiled = compile_for_sm90(launch, config)
    what = f"{name(launch[0])} {launch[2]} {config}"
    assert compiled.metadata.shared <= SM90_SHARED_BYTES, f"{what}: {compiled.metadata.shared} B of shared memory"
    assert (stack := stack_bytes(compiled)) == 0, f"{what}: registers spilled ({stack} B of stack)"


def test_the_ops_launch_every_kernel_in_every_fusion(launches):
    assert {name(kernel) for kernel, _, _ in launches} == {"_fused_matmul_kernel", "_penalty_norm_kernel", "_adam_kernel"}
    fusions = {(kw["PROLOGUE_MASK"], kw["EPILOGUE"], kw["HAS_BIAS"], kw["ROWSUM"])
               for kernel, _, kw in launches if kernel is matmul._fused_matmul_kernel}
    assert fusions == {
        (False, 1, True, False), (False, 1, False, False),  # forward, with and without bias
        (True, 0, False, False), (True, 0, False, True),  # backward: input, and weight + bias gradients
        (False, 0, False, False), (False, 0, False, True),  # the same for slope 1 (no mask)
        (False, 2, False, False),  # the penalty chain's masked product
    }


def test_every_launch_compiles_for_hopper_and_fits(launches):
    compiled = set()
    for launch in launches:
        config = fixed_config(launch[0])
        key = repr(specialize(launch, config))  # what the compiled code depends on
        if key not in compiled:
            compiled.add(key)
            check_fits(launch, config)


@pytest.mark.parametrize("kernel", [matmul._fused_matmul_kernel, penalty_norm._penalty_norm_kernel],
                         ids=["matmul", "penalty_norm"])
def test_every_autotune_config_fits_hopper(launches, kernel):
    # The autotuner skips a config that fails to compile or to fit, silently. Checked on the forward
    # GEMM (the critic's layer, fp32) and the penalty norm; the backward GEMMs load a mask tile too,
    # and there the largest tile (128x128x64) does not fit: the autotuner skips it there.
    forward = {"EPILOGUE": 1} if kernel is matmul._fused_matmul_kernel else {}
    launch = launch_of(launches, kernel, torch.float32, **forward)
    for config in kernel.configs:
        check_fits(launch, config)


@pytest.mark.parametrize("dtype, precision, tensor_cores", [(torch.float32, "tf32", True), (torch.bfloat16, "ieee", True),
                                                            (torch.float32, "ieee", False)],
                         ids=["tf32", "bf16", "fp32-ieee"])
def test_the_gemm_runs_on_tensor_cores_unless_fp32_is_asked_for(launches, dtype, precision, tensor_cores):
    kernel, args, kwargs = launch_of(launches, matmul._fused_matmul_kernel, dtype, EPILOGUE=1)
    assert kwargs["PRECISION"] == ("tf32" if dtype == torch.float32 else "ieee")  # the launcher's choice, TF32 allowed
    for config in (kernel.configs[0], fixed_config(kernel)):  # a 16-row tile (mma.sync) and a 64-row one (wgmma)
        ptx = compile_for_sm90((kernel, args, kwargs | {"PRECISION": precision}), config).asm["ptx"]
        assert bool(re.search(r"\b(wgmma|mma)\.", ptx)) == tensor_cores, f"{config}: tensor-core instructions"
