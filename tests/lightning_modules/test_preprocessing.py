"""preprocessing: one's own images prepared as the training images were."""

from __future__ import annotations

import pytest
import torch

from lightning_modules import preprocessing as pre


def _centre_of_mass(x: torch.Tensor) -> tuple[float, float]:
    w = x - x.min()
    ys, xs = torch.arange(28.0), torch.arange(28.0)
    return float((w.sum(1) * ys).sum() / w.sum()), float((w.sum(0) * xs).sum() / w.sum())


def test_a_digit_photo_becomes_an_mnist_digit():
    # A dark stroke on light paper, off-centre, in a 60x90 colour image.
    image = torch.full((3, 90, 60), 230, dtype=torch.uint8)
    image[:, 10:70, 5:15] = 30
    x = pre.digit(image)[0]  # (28, 28)
    assert x.shape == (28, 28)
    black = (0 - pre.MNIST_MEAN) / pre.MNIST_STD
    assert x.min() == pytest.approx(black) and x.max() == pytest.approx((1 - pre.MNIST_MEAN) / pre.MNIST_STD)
    margin = torch.cat([x[:4], x[-4:]])  # a margin, as MNIST's 20x20 box in a 28x28 field
    assert (margin - black).abs().max() < 1e-5
    cy, cx = _centre_of_mass(x)
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1  # centred by its centre of mass
    ink = x > 0
    assert ink.sum(0).nonzero().numel() < ink.sum(1).nonzero().numel()  # still a tall stroke
    light_on_dark = 255 - image  # the same digit as MNIST draws it: the same result
    torch.testing.assert_close(pre.digit(light_on_dark), pre.digit(image))


def test_preprocess_reads_files_by_the_spec_they_carry(tmp_path):
    from torchvision.io import write_png

    write_png(torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8), str(tmp_path / "a.png"))
    assert pre.preprocess(tmp_path / "a.png", pre.MNIST_PREPROCESSING).shape == (1, 28, 28)
    assert pre.preprocess(tmp_path / "a.png", pre.photo_eval_spec(32, 36)).shape == (3, 32, 32)
    assert pre.preprocess(tmp_path / "a.png", pre.photo_resized_spec(24)).shape == (3, 24, 24)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        pre.preprocess(tmp_path / "a.png", {"kind": "jpeg"})
    with pytest.raises(FileNotFoundError, match="b.png is missing"):
        pre.preprocess(tmp_path / "b.png", pre.MNIST_PREPROCESSING)
    (tmp_path / "c.png").write_text("not an image")
    with pytest.raises(pre.DataError, match="c.png: cannot decode this image"):
        pre.preprocess(tmp_path / "c.png", pre.MNIST_PREPROCESSING)
