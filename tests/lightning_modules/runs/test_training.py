"""runs.training: the non-finite-loss stops (training and validation), the clean stop on a signal,
a checkpoint of the other module kind named, resume refusing a crafted checkpoint, the per-epoch metrics read
back from the logs of a resumed run, and the best-epoch rule."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from lightning_modules.captioning import CaptioningModule
from lightning_modules.classifier import ClassifierModule
from lightning_modules.runs import signals, training
from lightning_modules.runs.errors import NonFiniteLossError, RunError, Stopped, UnsafeFileError
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


def _loaders(n: int = 16, batch_size: int = 4):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)
    return {"train_dataloaders": loader, "val_dataloaders": loader}


def test_a_non_finite_validation_loss_stops_the_training_after_its_epoch(tmp_path):
    class Overflowing(ClassifierModule):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            return super().validation_step((x * float("inf") if self.current_epoch == 1 else x, y), batch_idx)

    module = Overflowing({"name": "two_layer_net", "hidden": 4}, scheduler="constant")
    trainer = training.make_trainer(runs_args(), tmp_path, [], 3, logger=False, enable_checkpointing=False)
    with pytest.raises(NonFiniteLossError, match=r"the validation loss \(val_loss\) is nan after epoch 2, step 8:"):
        trainer.fit(module, **_loaders())
    assert trainer.current_epoch == 1  # the third epoch never started


def test_a_signal_during_a_training_stops_it_at_the_steps_end_with_a_checkpoint_to_resume_from(tmp_path):
    class Signalled(ClassifierModule):
        def training_step(self, batch, batch_idx):
            if self.global_step == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # as `kill`, SLURM or `timeout` would send it
            return super().training_step(batch, batch_idx)

    def trainer():
        best = training.checkpoints(tmp_path / "checkpoints", "val_acc", "max", every_n_steps=0)
        return training.make_trainer(runs_args(), tmp_path, best, 2, logger=False)

    module = Signalled({"name": "two_layer_net", "hidden": 4}, scheduler="constant")
    with signals.installed():
        with pytest.raises(Stopped) as stopped:
            training.fit(trainer(), module, tmp_path, resume=False, **_loaders())
    assert str(stopped.value) == "stopped by SIGTERM at epoch 1, step 2; nothing was published; resume with --resume"
    assert stopped.value.exit_status == 143
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # the step it stopped after
    again = trainer()
    training.fit(
        again,
        ClassifierModule({"name": "two_layer_net", "hidden": 4}, scheduler="constant"),
        tmp_path,
        True,
        **_loaders(),
    )
    assert again.global_step == 8  # it continued from there to the end (2 epochs of 4 steps)


def test_a_checkpoint_of_another_kind_of_module_is_named(tmp_path):
    trainer = training.make_trainer(runs_args(), tmp_path, [], 1, logger=False, enable_checkpointing=False)
    trainer.fit(ClassifierModule({"name": "two_layer_net", "hidden": 4}, scheduler="constant"), **_loaders())
    path = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(RunError, match=r"classifier.ckpt: not a CaptioningModule checkpoint: it holds a classifier"):
        training.load_module(CaptioningModule, path)
