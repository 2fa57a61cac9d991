"""kernels.adam against torch.optim.Adam: float64 reference math, torch's own fused fp32 step, and
torch's state layout."""
import math

import pytest
import torch

import kernels
from kernel_testing import DEVICE, INTERPRET
from kernels.adam import Adam

pytestmark = pytest.mark.skipif(not (INTERPRET or DEVICE == "cuda"), reason="needs CUDA or TRITON_INTERPRET=1")

# Tensors that end mid-block, scalar-sized ones, ones spanning two and three blocks, more of them than
# a launch has slots (so two launches, the second part-filled); the GPU adds G's layers.
SHAPES = [(37, 20), (5,), (1,), (1030,), (3, 3), (2049,), (1,), (64,), (1024,), (7, 2)] + (
    [] if INTERPRET else [(1024, 1024), (784, 1024), (1024,)])
HYPER = dict(lr=1e-2, eps=1e-8)


@pytest.fixture(autouse=True)
def custom_ops():
    kernels.set_backend("triton")  # on a CPU tensor (interpreter) the kernel only runs with custom ops on
    yield
    kernels.set_backend("auto")


def run(optimizer_class, params, grads, betas=(0.5, 0.999), **options):
    """Parameters after one step per gradient set, with the optimizer."""
    params = [p.detach().clone().requires_grad_() for p in params]
    opt = optimizer_class(params, betas=betas, **HYPER, **options)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.to(p.dtype)
        opt.step()
    return params, opt


def fresh(steps=8):
    params = [torch.randn(s, device=DEVICE) * 0.01 for s in SHAPES]  # small: the updates dominate them
    grads = [[torch.randn(s, device=DEVICE) * 10 ** torch.randint(-3, 2, ()).item() for s in SHAPES]
             for _ in range(steps)]
    return params, grads


# beta2 = 0.999 (the default): 1 - beta2**step is 0.001 at step 1, where 1 - exp(step·ln beta2)
# on the GPU's fast exp lost four digits (an H200 run); 0.9 does not test that.
@pytest.mark.parametrize("betas", [(0.5, 0.999), (0.9, 0.9), (0.0, 0.9)])  # beta1 0: WGAN-GP's later papers
def test_adam_matches_torch_adam(betas):
    params, grads = fresh()
    got, opt = run(Adam, params, grads, betas, fused=True, capturable=DEVICE == "cuda")
    # float64 reference math: agreement to fp32 rounding of the update, relative to its size
    ref64, ref_opt = run(torch.optim.Adam, [p.double() for p in params], grads, betas, foreach=False)
    for p, q, p0, shape in zip(got, ref64, params, SHAPES):
        update = (q - p0.double()).abs().max().item()
        assert update > 1e-3, "the steps moved nothing: the comparison would be empty"
        err = (p.double() - q).abs().max().item()
        assert err <= 1e-5 * update, f"{shape}: max error {err:.2e} against an update of {update:.2e}"
    # torch's own fused fp32 step: the same math in the same precision
    fused, _ = run(torch.optim.Adam, params, grads, betas, fused=True)
    for p, q in zip(got, fused):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # torch's state layout, so checkpoints load either way
    for p, q in zip(got, ref64):
        ours, theirs = opt.state[p], ref_opt.state[q]
        assert ours.keys() == theirs.keys() and ours["step"].item() == theirs["step"].item() == len(grads)
        torch.testing.assert_close(ours["exp_avg_sq"].double(), theirs["exp_avg_sq"], rtol=1e-5, atol=1e-12)


def test_the_kernel_ran_and_unsupported_options_fall_back(monkeypatch):
    """The comparison above is only worth something if the Triton path ran, a launch per SLOTS
    tensors; amsgrad is not in the kernel and must take torch's step (and give torch's result)."""
    import kernels.adam as adam

    params, grads = fresh(steps=2)
    calls, real_kernel = [], adam._adam_kernel

    class CountingKernel:
        def __getitem__(self, grid):
            calls.append(grid)
            return real_kernel[grid]

    monkeypatch.setattr(adam, "_adam_kernel", CountingKernel())
    run(Adam, params, grads, fused=True)
    assert len(SHAPES) > adam.SLOTS and len(calls) == 2 * math.ceil(len(SHAPES) / adam.SLOTS)  # a launch per SLOTS tensors
    calls.clear()
    got, _ = run(Adam, params, grads, fused=True, amsgrad=True)
    assert not calls
    expected, _ = run(torch.optim.Adam, params, grads, fused=True, amsgrad=True)
    for p, q in zip(got, expected):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("overflow", [False, True], ids=["finite", "overflow"])
def test_under_a_grad_scaler_steps_are_unscaled_and_overflowed_ones_skipped(overflow):
    """fp16 training: GradScaler gives a fused optimizer the scale and the inf flag and leaves the rest
    to it; the step must be torch's fused Adam's (unscaled moments; nothing moves on an overflow)."""
    params, (grads,) = fresh(steps=1)
    results = []
    for optimizer_class in (Adam, torch.optim.Adam):
        ps = [p.clone().requires_grad_() for p in params]
        opt = optimizer_class(ps, betas=(0.5, 0.999), **HYPER, fused=True)
        scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0 ** 16)
        loss = sum((p * g).sum() for p, g in zip(ps, grads)) * (math.inf if overflow else 1)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        results.append((ps, opt))
    (got, opt), (expected, ref_opt) = results
    for p, q, p0 in zip(got, expected, params):
        assert torch.equal(p, p0) if overflow else not torch.equal(p, p0)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(got, expected):
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref_opt.state[q]["exp_avg"], rtol=1e-6, atol=0)
