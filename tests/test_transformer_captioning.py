"""The attention captioner (TransformerCaptioner): it learns (the overfit sanity check), decodes
with the shared greedy and beam search, reloads from a checkpoint, compiles and exports."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.captioning import (
    CaptioningModule,
    CaptioningRNN,
    TransformerCaptioner,
    TransformerCaptioningConfig,
)

V, P, F = 20, 5, 12  # vocabulary, image positions, feature channels


def _data(n=8, length=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, P, F, generator=gen)
    captions = torch.randint(3, V, (n, length), generator=gen)
    captions[:, 0] = 1  # <START>
    for i in range(n):  # <END> then <NULL> padding, at different lengths
        end = 4 + i % (length - 4)
        captions[i, end] = 2
        captions[i, end + 1 :] = 0
    return features, captions


def _config(**overrides):
    sizes = dict(
        vocab_size=V,
        feature_dim=F,
        positions=P,
        model_dim=32,
        num_heads=4,
        num_layers=2,
        ffn_dim=64,
        dropout=0.0,
        max_length=16,
    )
    return TransformerCaptioningConfig(**{**sizes, **overrides})


def _reference(captions):
    """The caption words after <START>, up to and including <END>, <NULL>-padded to length - 1."""
    return captions[:, 1:]


def test_overfits_and_reproduces_captions_greedy_and_beam():
    torch.manual_seed(0)
    features, captions = _data()
    model = TransformerCaptioner(_config())
    model.set_feature_stats(features)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(features, captions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    model.eval()
    want = _reference(captions)
    for beam in (1, 3):
        got = model.sample(features, max_length=want.shape[1], beam_size=beam)
        assert torch.equal(got, want), (beam, got, want)


def test_step_by_step_decoding_equals_the_teacher_forced_scores():
    torch.manual_seed(0)
    features, captions = _data(n=3)
    model = TransformerCaptioner(_config()).eval()
    memory = model.encode(features)
    full = model.decode(captions[:, :-1], memory)  # (N, T, V)
    state = model.init_state(features)
    for t in range(captions.shape[1] - 1):
        scores, state = model.step(captions[:, t], state)
        torch.testing.assert_close(scores, full[:, t], rtol=1e-5, atol=1e-5)


def test_module_trains_and_reloads_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    module = CaptioningModule(**vars(_config()), lr=3e-3)
    assert isinstance(module.model, TransformerCaptioner)
    assert isinstance(CaptioningModule(vocab_size=V, feature_dim=F, cell="lstm").model, CaptioningRNN)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(TensorDataset(*_data()), batch_size=4))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    again = CaptioningModule.load_from_checkpoint(path, weights_only=True)
    features, captions = _data(n=2, seed=1)
    module.eval(), again.eval()
    torch.testing.assert_close(again.model(features, captions), module.model(features, captions))


def test_compiles_without_graph_breaks_and_exports():
    torch.manual_seed(0)
    features, captions = _data(n=3)
    model = TransformerCaptioner(_config())
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(features, captions)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    want = model(features, captions)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(features, captions), want, rtol=1e-5, atol=1e-6)
    exported = torch.export.export(model, (features, captions)).module()
    torch.testing.assert_close(exported(features, captions), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"model_dim": 30}, "not divisible"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"dropout": 1.0}, "dropout"),
        ({"cell": "lstm"}, "cell must be 'transformer'"),
    ],
)
def test_bad_sizes_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        TransformerCaptioner(_config(**overrides))


def test_wrong_feature_shape_is_named():
    model = TransformerCaptioner(_config())
    with pytest.raises(ValueError, match=r"features must be \(N, 5, 12\)"):
        model(torch.randn(2, 12), torch.ones(2, 4, dtype=torch.long))


def test_the_script_trains_the_attention_captioner_on_grid_features(tmp_path):
    """--cell transformer end to end on a tiny generated set: grid features, training, decodings, BLEU, report."""
    import json

    from tests.test_captioning import _script, make_coco

    root = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    _script().main(
        [
            "--format",
            "coco",
            "--data-root",
            str(root),
            "--weights",
            "none",
            "--image-size",
            "64",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--cell",
            "transformer",
            "--max-epochs",
            "2",
            "--model-dim",
            "16",
            "--num-heads",
            "2",
            "--num-layers",
            "1",
            "--ffn-dim",
            "32",
            "--min-count",
            "1",
            "--batch-size",
            "4",
            "--samples",
            "2",
            "--decodings",
            "greedy,beam2",
            "--no-progress",
        ]
    )
    results = json.loads((out / "results.json").read_text())["transformer"]
    assert set(results["test_bleu"]) >= {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert any("-grid-" in f.name for f in (tmp_path / "cache" / "features").iterdir())
    assert len(results["curves"]["train_loss"]) == 2
    module = CaptioningModule.load_from_checkpoint(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert isinstance(module.model, TransformerCaptioner) and module.model.config.positions == 4  # a 2x2 grid
    assert "TRANSFORMER" in (out / "README.md").read_text()
    with pytest.raises(SystemExit):  # the sizes are checked before any data is read
        _script().main(["--cell", "transformer", "--model-dim", "10", "--num-heads", "4"])
