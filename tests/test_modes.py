"""The modes run one iteration function: compile and graph give eager's losses, warm-up is undone,
fallbacks say why, and the step reads nothing back to the host."""
import contextlib
import logging

import pytest
import torch
from accelerate import Accelerator

import kernels
from fastgan.config import resolve
from fastgan.data import ResidentLoader, Split, bundled_sample
from fastgan.engine import build_engine, choose_mode
from fastgan.variants import VARIANTS

BATCH = 16
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def sample_split():
    return bundled_sample("train")


@pytest.fixture(scope="module")
def sample():
    return sample_split()


@pytest.fixture
def custom_ops():
    """fastgan's ops and analytic penalty on any device (reference math off CUDA), as on a GPU."""
    kernels.set_backend("triton")
    yield
    kernels.set_backend("auto")


def make(sample, gan, mode, device="cpu", arch="mlp", **settings):
    torch.manual_seed(0)
    cfg = resolve({"gan": gan, "arch": arch, "batch_size": BATCH, "mode": mode, **settings})
    engine = build_engine(cfg, Accelerator(cpu=device == "cpu"), compile_backend="aot_eager")
    loader = ResidentLoader(sample, BATCH, engine.accelerator.device, seed=0)
    loader.start_epoch(0)
    return engine, loader


def losses(engine, loader, steps, first=0, seed=1):
    """Each iteration's stats, copied (a graph's outputs are overwritten by its next replay); the
    generators seeded first unless seed is None."""
    if seed is not None:
        torch.manual_seed(seed)
        if CUDA:
            torch.cuda.manual_seed(seed)
    return [{k: v.detach().float().cpu().clone() for k, v in engine.iteration(loader, i).items()}
            for i in range(first, first + steps)]


def assert_close_runs(got, expected, rtol):
    assert [r.keys() for r in got] == [r.keys() for r in expected]
    for step, (a, b) in enumerate(zip(got, expected)):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=rtol, msg=f"step {step}: {key}")


def test_iteration_is_a_step_on_the_epochs_next_slice(sample):
    """iteration() (what graph mode captures: indices from the device cursor) = step() on batch i
    taken as the slice [i·B, (i+1)·B) of the epoch's permutation."""
    engine, loader = make(sample, "wgan_gp", "eager")
    got = losses(engine, loader, 6)
    engine, loader = make(sample, "wgan_gp", "eager")
    order = loader.permutation(0)
    torch.manual_seed(1)
    expected = []
    for i in range(6):
        idx = order[i * BATCH:(i + 1) * BATCH]
        expected.append({k: v.clone() for k, v in engine.step(loader.images[idx], loader.labels[idx], i).items()})
    assert_close_runs(got, expected, rtol=0)


@pytest.mark.parametrize("name", ["gan", "wgan_gp", "began", "infogan"])
def test_warmup_is_undone(sample, name):
    """What graph capture runs before capturing leaves no trace (weights, fresh Adam state, BEGAN's
    k, the cursor, the generator)."""
    engine, loader = make(sample, name, "eager")
    torch.manual_seed(1)
    with engine.undone(loader):
        losses(engine, loader, 3, seed=None)
    after_warmup = losses(engine, loader, 4, seed=None)  # the generator must be where it was, too
    engine, loader = make(sample, name, "eager")
    torch.manual_seed(1)
    assert_close_runs(after_warmup, losses(engine, loader, 4, seed=None), rtol=0)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_compile_matches_eager(sample, name, custom_ops):
    """Compiled losses (analytic penalty included) give eager's values, step by step."""
    engine, loader = make(sample, name, "compile")
    assert engine.mode == "compile"
    steps = engine.n_critic + 1
    compiled = losses(engine, loader, steps)
    engine, loader = make(sample, name, "eager")
    assert_close_runs(compiled, losses(engine, loader, steps), rtol=1e-5)


@needs_cuda
@pytest.mark.parametrize("arch,name", [("mlp", name) for name in VARIANTS] + [("conv", "gan"), ("conv", "wgan_gp")])
def test_graph_matches_eager(sample, name, arch, monkeypatch):
    """Replays of the captured iteration (D-only and D+G graphs for n_critic > 1) give eager's losses.
    Convolutions in fp32 and deterministic: Adam's first step is nearly ±lr per weight whatever the
    gradient's size, so a gradient near zero whose sign differs by rounding moves that weight by 2·lr;
    cuDNN's TF32 or atomics-based kernels differ that way between runs (conv gan, an H200 run:
    losses 0.14% apart at the second step)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    engine, loader = make(sample, name, "graph", "cuda", arch)
    assert engine.mode == "graph"
    steps = engine.n_critic + 2
    graphed = losses(engine, loader, steps)
    engine, loader = make(sample, name, "eager", "cuda", arch)
    assert_close_runs(graphed, losses(engine, loader, steps), rtol=1e-4)


@needs_cuda
@pytest.mark.parametrize("name", ["gan", "wgan_gp"])  # wgan_gp: EMA only in the D+G graph
def test_graph_keeps_the_moving_average_eager_keeps(sample, name):
    """--ema-decay: the update is captured with the G step; the averaged weights after a few replays
    are eager's (losses alone would not show it: nothing reads G_ema during training)."""
    averages = []
    for mode in ("graph", "eager"):
        engine, loader = make(sample, name, mode, "cuda", ema_decay=0.9)
        assert engine.mode == mode
        losses(engine, loader, 2 * engine.n_critic + 1)
        averages.append([p.detach().clone() for p in engine.G_ema.parameters()])
    for graphed, eager in zip(*averages):
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-6)


@needs_cuda
def test_graph_capture_at_a_large_batch():
    """Capture at batch 16,384: it failed on an H200 while a stale autograd stream could be pulled into
    the capture (warm-up snapshots cloned inside autograd)."""
    small = sample_split()
    big = Split(small.images.repeat(2, 1, 1), small.labels.repeat(2), "the sample, twice")
    runs = []
    for mode in ("graph", "eager"):
        torch.manual_seed(0)
        engine = build_engine(resolve({"gan": "gan", "batch_size": 16384}), Accelerator())
        engine.mode = mode
        loader = ResidentLoader(big, 16384, engine.accelerator.device, seed=0)
        loader.start_epoch(0)
        runs.append(losses(engine, loader, 1))
    assert_close_runs(runs[0], runs[1], rtol=1e-4)


def test_a_refused_capture_falls_back_to_eager_with_a_log_line(sample, monkeypatch, caplog):
    """CUDA can refuse a capture at run time (stream capture invalidated): the iteration goes on
    eagerly, from where it was, with one warning; nothing of the failed attempt remains."""
    engine, loader = make(sample, "gan", "eager")
    expected = losses(engine, loader, 3)
    engine, loader = make(sample, "gan", "eager")
    engine.mode = "graph"  # as on CUDA; its capture is made to fail the way CUDA reports it

    def refused(loader_, iteration):
        with engine.undone(loader_):
            engine.step(*loader_.next_batch(), iteration)  # a warm-up, then the refusal
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture\nmore")

    monkeypatch.setattr(engine, "_capture", refused)
    with caplog.at_level(logging.WARNING, logger="fastgan"):
        got = losses(engine, loader, 3)
    assert engine.mode == "eager" and caplog.text.count("capture failed") == 1
    assert "previous error during capture" in caplog.text and "more" not in caplog.text
    assert_close_runs(got, expected, rtol=0)


@needs_cuda
@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_no_host_sync_on_cuda(sample, name, mode):
    engine, loader = make(sample, name, mode, "cuda")
    losses(engine, loader, engine.n_critic)  # graph mode captures here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(engine.n_critic, 2 * engine.n_critic):
            engine.iteration(loader, i)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def host_reads_forbidden(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a value was read back to the host inside the step")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
            m.setattr(torch.Tensor, name, forbidden)
        yield


@pytest.mark.parametrize("name", list(VARIANTS))
def test_step_reads_nothing_back(sample, name, monkeypatch, custom_ops):
    """By construction, on any device: the iteration never converts a tensor to a host value."""
    engine, loader = make(sample, name, "eager")
    losses(engine, loader, 1)  # optimizer state is created on the first step
    with host_reads_forbidden(monkeypatch):
        for i in range(1, 1 + engine.n_critic):
            engine.iteration(loader, i)


@pytest.mark.parametrize("requested,arch,gan,device,processes,precision,expected,batch", [
    ("auto", "mlp", "gan", "cpu", 1, "no", "eager", 64),
    ("auto", "mlp", "gan", "cuda", 1, "no", "graph", 64),
    ("graph", "mlp", "gan", "cpu", 1, "no", "eager", 64),
    ("graph", "mlp", "gan", "cuda", 2, "no", "compile", 64),
    ("graph", "mlp", "gan", "cuda", 1, "fp16", "compile", 64),
    ("graph", "conv", "wgan_gp", "cuda", 1, "no", "graph", 64),  # double backward captures fine
    ("compile", "conv", "wgan_gp", "cuda", 1, "no", "eager", 64),  # but does not compile
    ("compile", "mlp", "cgan", "cuda", 1, "no", "compile", 64),
    ("compile", "mlp", "wgan_gp", "cuda", 1, "no", "compile", 64),  # analytic penalty
    ("graph", "mlp", "dragan", "cuda", 2, "no", "compile", 64),
    ("auto", "mlp", "gan", "cuda", 1, "no", "graph", 16384),
    ("compile", "mlp", "wgan_gp", "cuda", 1, "no", "compile", 16384),
])
def test_choose_mode(requested, arch, gan, device, processes, precision, expected, batch):
    cfg = resolve({"gan": gan, "arch": arch, "mode": requested, "mixed_precision": precision, "batch_size": batch})
    mode, why = choose_mode(requested, cfg, VARIANTS[gan](cfg), torch.device(device), processes)
    assert mode == expected
    assert (why is None) == (mode == requested or requested == "auto")


def test_compile_without_analytic_penalty_falls_back_with_a_log_line(sample, caplog):
    with caplog.at_level(logging.INFO, logger="fastgan"):
        engine, _ = make(sample, "wgan_gp", "compile", kernels="torch")
    assert engine.mode == "eager"
    assert "double backward" in caplog.text and "running in eager mode" in caplog.text


def test_fused_adam_equals_torch_adam_to_fp32_rounding():
    """The engine's optimizer (one fused kernel per network, capturable on CUDA) against
    torch.optim.Adam's reference loop, over steps with fresh gradients."""
    from fastgan.engine import optimizer

    device = torch.device("cuda" if CUDA else "cpu")
    params = [torch.randn(shape, device=device, requires_grad=True) for shape in [(256, 784), (256,), (1, 256)]]
    twins = [p.detach().clone().requires_grad_() for p in params]
    initial = [p.detach().clone() for p in params]
    fused = optimizer("adam", params, 1e-3, (0.5, 0.999), device)
    reference = torch.optim.Adam(twins, lr=1e-3, betas=(0.5, 0.999), foreach=False)
    for _ in range(20):
        for p, q in zip(params, twins):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        reference.step()
    for p, q, p0 in zip(params, twins, initial):
        assert (p - p0).abs().max() > 1e-3  # 20 steps of lr 1e-3 moved them
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
