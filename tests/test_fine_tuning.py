"""Fine-tuning (``--init_from CK``): a new run that starts from another run's weights, with a fresh
optimizer and step 0, normalised as the source run unless ``--renormalize``."""

import os
import shutil

import numpy as np
import pytest

from pipeline import CheckpointMismatch, Trainer
from tests.conftest import tiny_config


def test_init_from_starts_from_the_weights_with_a_fresh_optimizer(tiny_run, tmp_path):
    source = tiny_run.config
    config = tiny_config(source.records_dir, tmp_path, init_from=source.checkpoint_dir, epochs=1,
                         steps_per_epoch=6, checkpoint_every=6)
    messages = []
    trainer = Trainer(config, log=messages.append, progress=False)
    assert trainer.global_step == 0 and int(trainer.optimizer.iterations.numpy()) == 0
    assert any(m.startswith("starting from the weights of") for m in messages)
    for new, old in zip(trainer.model.variables, tiny_run.trainer.model.variables):
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    slots = [np.asarray(v) for v in trainer.optimizer.variables if np.asarray(v).ndim]
    assert slots and all(not s.any() for s in slots)  # Adam's moments start at zero
    np.testing.assert_array_equal(trainer.stats.mean, tiny_run.trainer.stats.mean)
    assert not trainer.initialize(tiny_run.batch)  # ActNorm came with the weights
    result = trainer.fit()
    assert result.step == 6
    # It starts where the source ended, far below where a fresh run starts.
    assert result.history[0]["bits_per_dim"] < tiny_run.result.history[0]["bits_per_dim"]
    # The source is left as it was; the new run is a run folder of its own.
    assert tiny_run.trainer.global_step == 12
    assert os.path.isfile(os.path.join(config.checkpoint_dir, "ckpt-6.index"))

    # The same command again resumes the new run and ignores --init_from.
    again = []
    resumed = Trainer(config.replace(epochs=2), log=again.append, progress=False)
    assert resumed.global_step == 6
    assert any("resuming it (--init_from" in m for m in again)


def test_renormalize_uses_the_new_songs_statistics(tiny_run, tmp_path):
    source = tiny_run.config
    records = str(tmp_path / "records")  # a copy: the training songs' statistics go beside it
    shutil.copytree(source.records_dir, records)
    config = tiny_config(records, tmp_path, init_from=source.checkpoint_dir, renormalize=True,
                         validation_split=0.5)
    trainer = Trainer(config, log=lambda _: None, progress=False)
    own = trainer.records.stats(trainer.data.training_songs)
    np.testing.assert_array_equal(trainer.stats.mean, own.mean)
    assert not np.array_equal(trainer.stats.mean, tiny_run.trainer.stats.mean)


def test_init_from_another_model_or_no_run_is_refused(tiny_run, tmp_path):
    source = tiny_run.config
    config = tiny_config(source.records_dir, tmp_path, init_from=source.checkpoint_dir)
    with pytest.raises(CheckpointMismatch, match=r"k_glow=2 \(now 3\), hidden_channels=8 \(now 16\)"):
        Trainer(config.replace(k_glow=3, hidden_channels=16), progress=False)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Trainer(config.replace(init_from=str(tmp_path)), progress=False)
    with pytest.raises(CheckpointMismatch, match="--checkpoint_dir itself"):
        Trainer(config.replace(init_from=config.checkpoint_dir), progress=False)
    assert not os.path.exists(config.checkpoint_dir)
