"""runs.training: the non-finite-loss stop, resume refusing a crafted checkpoint, the per-epoch metrics read
back from the logs of a resumed run, and the best-epoch rule."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.classifier import ClassifierModule
from lightning_modules.runs import training
from lightning_modules.runs.errors import NonFiniteLossError, UnsafeFileError
from lightning_modules.tasks import digit_classification
from tests.helpers import crafted


def test_read_metrics_merges_the_attempts_of_a_resumed_run(tmp_path):
    for version, rows in ((0, ["0,0.5,9,,", "0,,9,0.7,0.4"]), (1, ["1,0.3,19,,", "1,,19,0.8,0.35"])):
        folder = tmp_path / "logs" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("epoch,train_loss,step,val_acc,val_loss\n" + "\n".join(rows) + "\n")
    history = training.read_metrics(tmp_path)
    assert history == [
        {"epoch": 1, "train_loss": 0.5, "val_acc": 0.7, "val_loss": 0.4},
        {"epoch": 2, "train_loss": 0.3, "val_acc": 0.8, "val_loss": 0.35},
    ]


def test_resume_refuses_a_crafted_last_checkpoint(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "run"
    crafted(folder / "checkpoints" / "last.ckpt", marker)
    module = ClassifierModule({"name": "two_layer_net", "hidden": 4})
    trainer = training.make_trainer(runs_args(), folder, [], 1, logger=False, enable_checkpointing=False)
    with pytest.raises(UnsafeFileError, match="last.ckpt: refused to load"):
        training.fit(trainer, module, folder, resume=True)
    assert not marker.exists()


def runs_args():
    return digit_classification.PROGRAM.parse(
        ["fit", "--model", "softmax", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    )[1]


def test_finite_loss_check_names_epoch_and_step(tmp_path):
    class Diverging(ClassifierModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("inf") if self.global_step == 2 else loss

    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    module = Diverging({"name": "two_layer_net", "hidden": 4}, scheduler="constant")
    trainer = training.make_trainer(runs_args(), tmp_path, [], 2, logger=False, enable_checkpointing=False)
    with pytest.raises(NonFiniteLossError, match=r"loss is (inf|nan) at epoch 1, step 3 \(batch 3 of the epoch\)"):
        trainer.fit(module, loader)


def test_best_row_is_the_first_best_epoch_of_the_monitored_value():
    history = [
        {"epoch": 1, "val_acc": 0.5, "val_loss": 0.9},
        {"epoch": 2, "val_acc": 0.8, "val_loss": 0.4},
        {"epoch": 3, "val_acc": 0.8, "val_loss": 0.4},
        {"epoch": 4, "val_acc": 0.7},
    ]
    assert training.best_row(history, "val_acc", "max")["epoch"] == 2  # ties: the first, as ModelCheckpoint keeps
    assert training.best_row(history, "val_loss", "min")["epoch"] == 2
    with pytest.raises(ValueError, match="no epoch logged 'train_acc'"):
        training.best_row(history, "train_acc", "max")


def test_a_resumed_run_continues_its_log_version(tmp_path):
    first = training.loggers(tmp_path)[0]
    first.log_metrics({"train_loss_step": 1.0}, step=0)
    first.save()
    again = training.loggers(tmp_path, resume=True)[0]
    assert again.version == first.version == 0
    again.log_metrics({"train_loss_step": 0.5, "val_acc": 0.9}, step=1)  # a new column too
    again.save()
    rows = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_acc" in rows[0]  # the first attempt's row kept, the header widened
    assert training.loggers(tmp_path)[0].version == 1  # a fresh run (not resumed) starts a new one
