"""captioners and captioning: the captioners (RNN/LSTM on pooled features, the attention captioner on a feature grid):
greedy and beam decoding, the loss ignoring padding, overfitting, step-by-step decoding equal to
teacher forcing, compiling and exporting, bad sizes named, and the LightningModule reloading."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.captioners import (
    CaptioningConfig,
    CaptioningRNN,
    TransformerCaptioner,
    TransformerCaptioningConfig,
)
from lightning_modules.captioning import CaptioningModule

V, P, F = 20, 5, 12  # vocabulary, image positions, feature channels (the attention captioner's tests)

# --------------------------------------------------------------------------- RNN and LSTM


def _tiny_model(cell="rnn", vocab_size=10):
    torch.manual_seed(0)
    return CaptioningRNN(CaptioningConfig(vocab_size, feature_dim=6, wordvec_dim=4, hidden_dim=8, cell=cell))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("beam", [1, 3])
def test_sample_stops_at_end_and_respects_max_length(cell, beam):
    model = _tiny_model(cell)
    features = torch.randn(4, 6)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[model.config.end_id] = 10.0  # <END> is by far the likeliest word
    out = model.sample(features, max_length=5, beam_size=beam)
    assert out.shape == (4, 5)
    assert (out[:, 0] == model.config.end_id).all() and (out[:, 1:] == model.config.null_id).all()
    with torch.no_grad():
        model.head.bias[model.config.end_id] = -10.0
        model.head.bias[7] = 10.0  # never ends: cut at max_length
    out = model.sample(features, max_length=6, beam_size=beam)
    assert out.shape == (4, 6) and (out == 7).all()


def test_model_loss_ignores_padding():
    model = _tiny_model()
    features = torch.randn(2, 6)
    captions = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0]])
    loss = model(features, captions)
    padded_more = torch.cat([captions, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(features, padded_more), loss)
    with pytest.raises(ValueError, match="features must be"):
        model(torch.randn(2, 5), captions)
    with pytest.raises(ValueError, match="cell"):
        CaptioningRNN(CaptioningConfig(10, cell="gru"))


def test_features_of_one_image_standardise_to_finite_values():
    # One overfit caption: a single image's features have no spread (std NaN), which made every loss NaN.
    model = CaptioningRNN(CaptioningConfig(vocab_size=8, feature_dim=5, wordvec_dim=4, hidden_dim=6))
    features = torch.randn(1, 5)
    model.set_feature_stats(features)
    assert torch.isfinite(model(features, torch.tensor([[1, 4, 5, 2]]))).all()


def test_captioning_module_is_built_from_keywords_and_rebuilt_from_its_hyper_parameters():
    by_keywords = CaptioningModule(vocab_size=13, feature_dim=6, wordvec_dim=8, hidden_dim=16, cell="lstm", lr=1e-2)
    hparams = dict(by_keywords.hparams)
    assert hparams["cell"] == "lstm" and hparams["dropout"] == CaptioningConfig(13).dropout  # defaults declared once
    assert "model" not in hparams  # one way to give the sizes: keywords, flat in the hyper-parameters
    again = CaptioningModule(**hparams)
    assert dict(again.hparams) == hparams and again.model.config == by_keywords.model.config
    with pytest.raises(ValueError, match="unknown model 'gru_captioner'"):
        CaptioningModule(vocab_size=13, cell="gru")


# --------------------------------------------------------------------------- the attention captioner


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
    module = CaptioningModule(cell="transformer", **vars(_config()), lr=3e-3)
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
    ],
)
def test_bad_sizes_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        TransformerCaptioner(_config(**overrides))


def test_wrong_feature_shape_is_named():
    model = TransformerCaptioner(_config())
    with pytest.raises(ValueError, match=r"features must be \(N, 5, 12\)"):
        model(torch.randn(2, 12), torch.ones(2, 4, dtype=torch.long))


def test_attention_maps_are_the_last_layers_cross_attention_per_word():
    torch.manual_seed(0)
    features, captions = _data(n=2)
    model = TransformerCaptioner(_config()).eval()
    maps = model.attention_maps(features, captions[:, :5])  # (N, T, P)
    assert maps.shape == (2, 5, P) and torch.allclose(maps.sum(-1), torch.ones(2, 5))
    # The weights are those the layer uses: with them, its cross-attention output is recomputed exactly.
    layer, memory = model.layers[-1], model.encode(features)
    x = model.drop(model.position(model.embed(captions[:, :5])))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    for earlier in model.layers[:-1]:
        x = earlier(x, memory, causal)
    q_in = layer.norm1(x + layer.self_attn(x, x, x, causal))
    attn = layer.cross_attn
    v = torch.nn.functional.linear(memory, attn.value.weight.t(), attn.value.bias)  # (N, P, D)
    heads = attn.num_heads
    vh = v.view(2, P, heads, -1)  # (N, P, H, D/H)
    q = torch.nn.functional.linear(q_in, attn.query.weight.t(), attn.query.bias).view(2, 5, heads, -1)
    k = torch.nn.functional.linear(memory, attn.key.weight.t(), attn.key.bias).view(2, P, heads, -1)
    w = (torch.einsum("nthe,nphe->nhtp", q, k) / (q.shape[-1] ** 0.5)).softmax(-1)  # (N, H, T, P)
    out = torch.einsum("nhtp,nphe->nthe", w, vh).reshape(2, 5, -1)
    want = torch.nn.functional.linear(out, attn.out.weight.t(), attn.out.bias)
    torch.testing.assert_close(attn(q_in, memory, memory), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps, w.mean(1), rtol=1e-5, atol=1e-6)
