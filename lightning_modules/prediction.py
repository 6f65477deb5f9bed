"""Using a trained checkpoint on one's own images: the ``predict`` subcommands.

Every checkpoint carries what it needs (the network's spec, its preprocessing, the class names or the
vocabulary, a captioner's image encoder), so nothing but the checkpoint and the images is read. Each
image gives one printed line (and, on request, one JSON record).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_modules.data.features import pooled_features
from lightning_modules.preprocessing import preprocess
from lightning_modules.runs.errors import RunError
from lightning_modules.runs.storage import write_json


def _finish(records: list[dict[str, Any]], lines: list[str], json_path: str | os.PathLike | None) -> list[dict]:
    for line in lines:
        print(line, flush=True)
    if json_path is not None:
        write_json(json_path, records)
    return records


@torch.no_grad()
def classify(
    ckpt: str | os.PathLike, images: Sequence[str | os.PathLike], json_path: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Each image's class and its probability, from a ``ClassifierModule`` checkpoint (digits or transfer)."""
    from lightning_modules.classifier import ClassifierModule
    from lightning_modules.runs.training import load_module

    module = load_module(ClassifierModule, ckpt).eval()
    spec, classes = module.hparams.get("preprocessing"), list(module.hparams["classes"])
    if spec is None:
        raise RunError(f"{ckpt}: the checkpoint records no preprocessing, so its inputs cannot be prepared")
    records, lines = [], []
    for path in images:
        x = preprocess(path, spec)[None]  # (1, C, H, W)
        probs = module(x).softmax(-1)[0]  # (K,)
        k = int(probs.argmax())
        records.append(
            {"image": str(path), "label": classes[k], "probability": float(probs[k]), "probabilities": probs.tolist()}
        )
        lines.append(f"{path}: {classes[k]} ({100 * float(probs[k]):.1f}%)")
    return _finish(records, lines, json_path)


def image_encoder(module) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A captioning checkpoint's image encoder, built without pretrained weights and loaded from the
    checkpoint, and its description (backbone, trunk, pooling, preprocessing). The trunk is of the
    kind the captioner was trained on, customops or native layers (a checkpoint that does not record
    it runs on customops layers: the state_dicts of the two kinds are the same)."""
    from lightning_modules.pretrained import backbone

    spec = module.hparams.get("image_encoder")
    if spec is None or module.image_encoder_state is None:
        raise RunError("this captioning checkpoint holds no image encoder; train it again with this version")
    trunk, _ = backbone(spec["backbone"], None, spec.get("trunk", "customops"))
    trunk.load_state_dict(module.image_encoder_state)
    return trunk.eval(), spec


@torch.no_grad()
def caption(
    ckpt: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    beam_size: int = 3,
    length_penalty: float = 0.0,
    max_length: int = 20,
    attention_map: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Each photo's caption from a ``CaptioningModule`` checkpoint; with `attention_map` (the attention
    captioner), a picture of where each word looked."""
    from lightning_modules.captioning import CaptioningModule, TransformerCaptioner
    from lightning_modules.data.vocabulary import Vocabulary
    from lightning_modules.reporting.figures import attention_grid
    from lightning_modules.runs.training import load_module

    module = load_module(CaptioningModule, ckpt).eval()
    model = module.model
    if attention_map is not None and not isinstance(model, TransformerCaptioner):
        raise RunError(f"--attention_map: {ckpt} is a {module.hparams['cell']} captioner, which has no attention")
    vocab = Vocabulary(list(module.hparams["vocabulary"]))
    trunk, spec = image_encoder(module)
    records, lines = [], []
    for path in images:
        x = preprocess(path, spec["preprocessing"])[None]  # (1, 3, S, S)
        maps = trunk(x)  # (1, C, h, w)
        features = pooled_features(maps)[spec["pooling"]]  # as the cache holds them: (1, C) or (1, h*w, C)
        ids = model.sample(features, max_length, beam_size, length_penalty)[0].tolist()  # (max_length,)
        text = vocab.decode(ids)
        record: dict[str, Any] = {"image": str(path), "caption": text}
        if attention_map is not None:
            words = text.split()
            prefix = torch.tensor([[vocab.start_id, *ids[: len(words)]]])  # <START> w1 .. wk: predicts w1 .. <END>
            weights = model.attention_maps(features, prefix)[0, : len(words)]  # (k, h*w)
            target = Path(attention_map)
            if len(images) > 1:
                target = target.with_name(f"{target.stem}_{Path(path).stem}{target.suffix}")
            grid = weights.view(len(words), maps.shape[2], maps.shape[3])  # (k, h, w)
            record["attention_map"] = str(attention_grid(x[0], spec["preprocessing"], words, grid, target, text))
        records.append(record)
        lines.append(f"{path}: {text}")
    return _finish(records, lines, json_path)
