"""tasks.benchmark_training: its options checked up front."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_modules.runs import storage
from lightning_modules.tasks import benchmark_training as TASK

BAD_OPTIONS = [
    (["--trainer.limit_train_batches", "0"], '"trainer.limit_train_batches"', "must be a fraction in (0, 1]"),
    (["--trainer.limit_train_batches", "2.5"], '"trainer.limit_train_batches"', "a number of batches must be whole"),
    (["--resume"], "--resume", "nothing to resume"),
]


@pytest.mark.parametrize("argv,key,message", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_options_are_rejected_before_any_data_is_read(argv, key, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TASK.PROGRAM.parse(["fit", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: " in error and key in error, error  # the option named
    assert message in error, error


def test_limit_train_batches_takes_a_count_or_a_fraction():
    _, recipe = TASK.PROGRAM.parse(["fit", "--trainer.limit_train_batches", "20"])
    assert recipe.trainer.limit_train_batches == 20 and isinstance(recipe.trainer.limit_train_batches, int)
    _, recipe = TASK.PROGRAM.parse(["fit", "--trainer.limit_train_batches", "0.5"])
    assert recipe.trainer.limit_train_batches == 0.5


# ---------------------------------------------------------------- the captioners


def test_the_captioners_are_timed_against_their_twins_step_by_step(tmp_path, monkeypatch):
    """A tiny run: each captioner's row holds interleaved repeats of both sides on the same batches, and
    benchmark.md shows them; no MNIST data is read when no MNIST net is timed."""
    import lightning_modules.captioner_twins as twins

    built = []
    torch_twin = twins.torch_twin

    def spy(custom):
        twin = torch_twin(custom)
        built.append((custom, twin))
        return twin

    monkeypatch.setattr(TASK, "torch_twin", spy)
    monkeypatch.setattr(TASK, "MNISTDataModule", None)  # would fail if called
    out = tmp_path / "bench"
    argv = ["fit", "--models", "[rnn, lstm, transformer]", "--caption_vocab_size", "12", "--caption_batch_size", "3"]
    argv += ["--caption_words", "4", "--steps", "2", "--warmup_steps", "1", "--repeats", "2", "--compile", "false"]
    argv += ["--caption_precision", "32-true", "--out", str(out), "--trainer.enable_progress_bar", "false"]
    results = TASK.main(argv)
    assert [r["model"] for r in results["results"]] == ["rnn", "lstm", "transformer"]
    for row, (custom, twin) in zip(results["results"], built, strict=True):
        assert row["spec"]["vocab_size"] == 12 and row["batch_size"] == 3 and "compiled" not in row
        assert custom.config.vocab_size == 12 and type(twin).__module__ == "lightning_modules.captioner_twins"
        eager = row["eager"]
        assert len(eager["step_s"]["custom"]) == len(eager["step_s"]["torch"]) == 2
        assert eager["ratio"] == pytest.approx(eager["median_custom_s"] / eager["median_torch_s"])
    # The recipe's sizes: the attention captioner's width and heads, the recurrent ones' state.
    transformer = results["results"][2]["spec"]
    assert (transformer["model_dim"], transformer["num_heads"], transformer["num_layers"]) == (256, 4, 2)
    assert results["results"][1]["spec"]["hidden_dim"] == 512 and results["results"][1]["spec"]["dropout"] == 0.3
    assert results["steps"] == {"device": "cpu", "precision": "32-true", "compile": False}
    saved = storage.read_json(out / "benchmark.json")
    assert saved["results"] == json.loads(json.dumps(results["results"]))
    md = (out / "benchmark.md").read_text()
    assert "## Training steps" in md and "nn.TransformerDecoder" in md and "nn.LSTM" in md
    assert "MNIST" not in md


def test_the_synthetic_caption_batches_have_the_recipes_shapes():
    from lightning_modules.models import get_model

    model = get_model("transformer_captioner", vocab_size=30, feature_dim=8, positions=5, model_dim=8, num_heads=2)
    (features, captions), _ = TASK.caption_batches(model, 6, 5, 2, seed=0, device=torch.device("cpu"))
    assert features.shape == (6, 5, 8) and captions.shape == (6, 7)
    assert (captions[:, 0] == 1).all() and captions[0, 6] == 2  # <START>; the first caption fills the row
    for caption in captions.tolist():
        end = caption.index(2)
        assert 2 <= end <= 6 and all(4 <= w < 30 for w in caption[1:end]) and set(caption[end + 1 :]) <= {0}
    again = TASK.caption_batches(model, 6, 5, 2, seed=0, device=torch.device("cpu"))
    assert torch.equal(again[0][1], captions)  # the same batches for both sides, from the seed
    rnn = get_model("rnn_captioner", vocab_size=30, feature_dim=8)
    assert TASK.caption_batches(rnn, 6, 5, 1, seed=0, device=torch.device("cpu"))[0][0].shape == (6, 8)


# ---------------------------------------------------------------- MobileNetV2 fine-tuning


def test_the_finetune_pair_is_mobilenet_v2_on_the_customops_and_the_native_trunk_from_the_same_weights():
    from torch import nn

    torch.manual_seed(0)
    pair = TASK.finetune_pair(None)
    custom, native = pair["custom"].net, pair["torch"].net
    assert not any(
        isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and type(m).__module__.startswith("torch")
        for m in custom.trunk.modules()
    )
    assert any(type(m) is nn.Conv2d for m in native.trunk.modules())
    # The fine-tune scenario: BatchNorm statistics frozen in training mode, on both sides.
    for net in (custom, native):
        net.train()
        norms = [m for m in net.trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and not any(m.training for m in norms)
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1])
    losses = {impl: module.double()(x, y) for impl, module in pair.items()}
    torch.testing.assert_close(losses["custom"], losses["torch"])


def test_the_mobilenet_v2_row_times_fine_tuning_steps_on_both_trunks(tmp_path):
    out = tmp_path / "bench"
    argv = ["fit", "--models", "[mobilenet_v2]", "--trunk_batch_size", "2", "--trunk_image_size", "32"]
    argv += ["--trunk_weights", "none", "--trunk_steps", "1", "--warmup_steps", "1", "--repeats", "2"]
    argv += ["--compile", "false", "--out", str(out), "--trainer.enable_progress_bar", "false"]
    (row,) = TASK.main(argv)["results"]
    assert row["model"] == "mobilenet_v2" and row["batch_size"] == 2 and row["spec"]["bn_stats"] == "frozen"
    assert len(row["eager"]["step_s"]["custom"]) == 2 and "compiled" not in row
    assert "MobileNetV2 fine-tuning, 32x32" in (out / "benchmark.md").read_text()
