"""Sample-quality metrics, the evaluate and sample commands, evaluation during training, EMA, and the sweep."""
import json
import math

import pytest
import torch
from accelerate import Accelerator

from fastgan import evaluate
from fastgan.config import resolve
from fastgan.data import load_split
from fastgan.engine import build_engine
from fastgan.evaluate import classifier_score, coverage, frechet_distance
from fastgan.train import main as train_main


@pytest.fixture(scope="module")
def digits():
    from fastgan.data import bundled_sample

    return bundled_sample("train"), bundled_sample("test")


@pytest.fixture(scope="module")
def classifier(digits):
    train, _ = digits
    return evaluate.train_classifier(train.images, train.labels, epochs=3, progress=False)  # ~10 s


def test_frechet_distance_of_a_set_with_itself_is_zero_and_real_vs_noise_is_large(classifier, digits):
    _, test = digits
    real = evaluate._scaled(test.images)
    feats, _ = evaluate.classify(classifier, real)
    assert abs(frechet_distance(feats, feats)) < 1e-6
    noise_feats, _ = evaluate.classify(classifier, torch.rand_like(real) * 2 - 1)
    held_a, held_b = feats[::2], feats[1::2]
    assert frechet_distance(noise_feats, feats) > 20 * frechet_distance(held_a, held_b)


def test_frechet_distance_matches_the_closed_form_for_known_gaussians():
    torch.manual_seed(0)
    a = torch.randn(200_000, 3, dtype=torch.float64)
    b = torch.randn(200_000, 3, dtype=torch.float64) * 2 + 1  # N(1, 4I): FD = 3·1² + 3·(1 + 4 − 2·2) = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, abs=0.1)


def test_score_and_coverage_of_real_digits_and_of_a_single_digit(classifier, digits):
    _, test = digits
    _, probs = evaluate.classify(classifier, evaluate._scaled(test.images))
    assert classifier_score(probs) > 8.0
    assert coverage(probs)[0] == 10 and coverage(probs)[1] < 0.05
    sevens = test.images[test.labels == 7]
    _, probs_one = evaluate.classify(classifier, evaluate._scaled(sevens[:1].expand(500, -1, -1)))
    assert classifier_score(probs_one) < 1.01
    covered, kl = coverage(probs_one)
    assert covered == 1 and kl == pytest.approx(math.log(10))


def test_real_floor_of_a_class_sorted_split_sees_every_class(classifier, digits):
    """The bundled sample is stored sorted by class: a floor on fewer digits than the split must
    still draw from all of it (it once took the first n: digits 0-5 only at n = 5,000)."""
    train, test = digits
    assert torch.equal(train.labels, train.labels.sort().values)  # the premise
    floor, _ = evaluate.real_floor(classifier, train.images, test.images, n=2000)
    assert floor.coverage == 10 and floor.score > 8.0


def cache_classifier(tiny_mnist, monkeypatch, tmp_path):
    """Put a quickly trained classifier in the cache under the tiny data's hash."""
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    train = load_split("mnist", "train", tiny_mnist)
    model = evaluate.train_classifier(train.images, train.labels, epochs=30, progress=False)
    path = evaluate.cache_dir() / f"lenet-{evaluate.data_hash(train.images, train.labels)}.pt"
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)


def test_evaluate_command_writes_metrics_json(tiny_mnist, tmp_path, monkeypatch, capsys):
    cache_classifier(tiny_mnist, monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert train_main(["--data-dir", str(tiny_mnist), "--out", str(run), "--batch-size", "32", "--epochs", "1", "--gan", "cgan"]) == 0
    capsys.readouterr()
    assert evaluate.main([str(run), "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "FD-LeNet" in out and "real vs real" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["samples"] == 300 and metrics["step"] == 8
    assert set(metrics["generated"]) == {"fd", "score", "coverage", "class_kl", "label_accuracy"}
    assert metrics["generated"]["label_accuracy"] is not None  # cgan is asked for each label
    assert metrics["real_vs_real"]["coverage"] == 10


def test_evaluation_during_training_is_logged_and_leaves_training_untouched(tiny_mnist, tmp_path, monkeypatch):
    cache_classifier(tiny_mnist, monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["--data-dir", str(tiny_mnist), "--batch-size", "32", "--epochs", "2", "--gan", "gan"]
    assert train_main([*common, "--out", "plain"]) == 0
    monkeypatch.setattr(evaluate.Evaluator, "__init__", _small_evaluator)
    assert train_main([*common, "--out", "evaluated", "--eval-every", "1"]) == 0
    rows = (tmp_path / "evaluated" / "eval.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,fd,score,coverage,class_kl,label_accuracy" and len(rows) == 3
    assert json.loads((tmp_path / "evaluated" / "metrics.json").read_text())["epoch"] == 2
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["G"] for d in ("plain", "evaluated"))
    assert all(torch.equal(a[k], b[k]) for k in a)


_original_init = evaluate.Evaluator.__init__


def _small_evaluator(self, train, test, device, n=10_000):
    _original_init(self, train, test, device, n=200)


def test_ema_tracks_the_generator_and_is_checkpointed():
    cfg = resolve({"gan": "gan", "batch_size": 8, "ema_decay": 0.9})
    engine = build_engine(cfg, Accelerator(cpu=True))
    expected = [p.detach().clone() for p in engine.G.parameters()]
    real, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8, dtype=torch.long)
    for it in range(3):
        engine.step(real, y, it)
        expected = [0.9 * e + 0.1 * p.detach() for e, p in zip(expected, engine.G.parameters())]
    for e, p in zip(expected, engine.G_ema.parameters()):
        torch.testing.assert_close(p, e)
    assert "G_ema" in engine.state_dict()
    z = engine.noise(4)
    assert torch.equal(engine.samples(z), engine.G_ema(z))


def test_interpolation_rows_walk_between_endpoints_with_the_label_fixed():
    variant = build_engine(resolve({"gan": "acgan"}), Accelerator(cpu=True)).variant
    z_from, z_to = torch.zeros(3, 96), torch.ones(3, 96)
    (latent, nrow), = variant.interpolation_latents(z_from, z_to, 5).values()
    grid = latent.view(3, 5, -1)
    assert nrow == 5 and torch.equal(grid[:, 0, :96], z_from) and torch.equal(grid[:, -1, :96], z_to)
    assert torch.equal(grid[:, :, 96:].argmax(-1), torch.arange(3)[:, None].expand(3, 5))


def test_infogan_interpolation_sweeps_each_code_over_the_rows_and_steps_asked_for():
    variant = build_engine(resolve({"gan": "infogan"}), Accelerator(cpu=True)).variant
    z_from = torch.randn(3, 96)
    grids = variant.interpolation_latents(z_from, torch.randn(3, 96), 5)
    assert list(grids) == ["cont1", "cont2"]
    for j, (latent, nrow) in enumerate(grids.values()):
        grid = latent.view(3, 5, -1)  # z (96), category (10), continuous codes (2)
        assert nrow == 5 and torch.equal(grid[:, :, :96], z_from[:, None].expand(3, 5, 96))
        assert torch.equal(grid[:, :, 96:106].argmax(-1), torch.arange(3)[:, None].expand(3, 5))
        assert torch.equal(grid[:, :, 106 + j], torch.linspace(-1, 1, 5).expand(3, 5))
        assert not grid[:, :, 106 + (1 - j)].any()


def test_sample_command_writes_interpolation_grids(tiny_mnist, tmp_path, monkeypatch):
    from fastgan import sample

    monkeypatch.chdir(tmp_path)
    assert train_main(["--data-dir", str(tiny_mnist), "--out", "run", "--batch-size", "32", "--epochs", "1", "--gan", "infogan"]) == 0
    assert sample.main(["run", "--interpolate"]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("interpolate*")) == ["interpolate_cont1.png", "interpolate_cont2.png"]
    assert sample.main(["run"]) == 0 and (tmp_path / "run" / "samples" / "sample.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--gans", "gan,bigan"], "unknown --gan 'bigan'"),
    (["--gans", ","], "--gans names no variant"),
    (["--samples", "1"], "--samples must be at least 2"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--gans", "gan,ebgan", "--batch-size", "1"], "--batch-size 1: ebgan's pull-away term needs at least 2"),
    (["--arch", "resnet"], "unknown --arch 'resnet'"),
])
def test_sweep_refuses_bad_settings_before_training_anything(argv, message, tmp_path, monkeypatch, capsys):
    from fastgan import sweep

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        sweep.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_and_sample_refuse_a_checkpoint_whose_settings_do_not_resolve(tiny_mnist, tmp_path, monkeypatch, capsys):
    from fastgan import sample

    monkeypatch.chdir(tmp_path)
    assert train_main(["--data-dir", str(tiny_mnist), "--out", "run", "--batch-size", "128", "--epochs", "1"]) == 0
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    checkpoint["config"]["lr_g"] = -1.0  # e.g. written by another version with other rules
    torch.save(checkpoint, "run/checkpoint.pt")
    for command in (evaluate.main, sample.main):
        with pytest.raises(SystemExit) as exit_:
            command(["run"])
        assert exit_.value.code == 2 and "--lr-g must be a finite number > 0" in capsys.readouterr().err


def test_sweep_writes_reports_with_their_images(tiny_mnist, tmp_path, monkeypatch):
    from fastgan import sweep

    cache_classifier(tiny_mnist, monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert sweep.main(["--gans", "gan,lsgan", "--epochs", "1", "--data-dir", str(tiny_mnist), "--batch-size", "32",
                       "--samples", "200", "--out", "sweep"]) == 0
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| gan |" in report and "| lsgan |" in report and "real vs real" in report
    images = [part.split(")")[0] for row in report.splitlines() for part in row.split("](")[1:]]
    assert len(images) == 4 and all((tmp_path / "sweep" / image).is_file() for image in images)
    page = (tmp_path / "sweep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # a grid and a loss plot per variant, inlined
