"""The validation curve (utils/training/validation.py): which songs are held out and how that is
kept, the held-out bits/dim every epoch, best/ and early stopping.

One tiny run that holds out one song per singer (module fixture ``validated``) is shared by the
tests that only inspect it; tests that train on copy its checkpoint folder.
"""

import json
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_loader import SongDataLoader
from pipeline import Trainer
from tests.conftest import copy_run, tiny_config
from utils.data.records import aligned_step
from utils.runs.run_folder import load_for_inference
from utils.training.validation import (
    ValidationMetrics,
    ValidationSplit,
    choose_split,
    held_out_per_label,
)


def scalars(logdir, tag):
    values = {}
    for name in sorted(os.listdir(logdir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


@pytest.fixture(scope="module")
def records(tiny_records, tmp_path_factory):
    """A copy of the shared tiny records (statistics of song subsets are cached beside them)."""
    folder = str(tmp_path_factory.mktemp("validation_records") / "records")
    shutil.copytree(tiny_records, folder)
    return folder


@pytest.fixture(scope="module")
def validated(records, tmp_path_factory):
    """2 epochs x 6 steps holding out half of each singer's two songs."""
    folder = tmp_path_factory.mktemp("validated")
    config = tiny_config(records, folder, validation_split=0.5, epochs=2, steps_per_epoch=6,
                         checkpoint_every=6)
    messages = []
    trainer = Trainer(config, log=messages.append, progress=False)
    result = trainer.fit()
    return trainer, result, messages


# ---------------------------------------------------------------------------------- the split
def test_the_split_holds_out_whole_songs_per_label_by_name_not_by_folder_or_seed():
    songs = {f"/a/real/s{i}.wav": "real" for i in range(10)}
    songs.update({f"/a/virtual/s{i}.wav": "virtual" for i in range(2)})
    songs["/a/solo/only.wav"] = "solo"
    held = held_out_per_label(songs, 0.2)
    labels = [songs[p] for p in held]
    assert labels.count("real") == 2 and labels.count("virtual") == 1  # at least one of two
    assert "solo" not in labels  # a label's only song is never held out
    assert held_out_per_label(songs, 0.0) == ()
    assert len([p for p in held_out_per_label(songs, 0.95) if songs[p] == "virtual"]) == 1
    # The same corpus elsewhere holds out the same songs (by label and file name).
    moved = {p.replace("/a/", "/elsewhere/b/"): label for p, label in songs.items()}
    assert [p.replace("/a/", "/elsewhere/b/") for p in held] == list(held_out_per_label(moved, 0.2))


def test_records_serve_and_normalise_only_the_songs_asked_for(records, tmp_path):
    config = tiny_config(records, tmp_path)
    records = SongDataLoader(config).records()
    real = sorted(p for p, label in records.song_labels.items() if label == "real")
    assert len(real) == 2
    _, names = next(iter(records.training_dataset(seed=3, labels=True, songs=real[:1])))
    assert set(names.numpy()) == {b"real"}
    windows = 0
    for song in records.songs():
        if song.path == real[0]:
            windows = 1 + (len(song.samples) - config.patch_samples) // aligned_step(config)
    patches = sum(len(b) for b in records.evaluation_dataset(batch_size=7, songs=real[:1]))
    assert patches == windows > 0
    subset, everything = records.stats(real), records.stats()
    assert subset.source != everything.source and not np.allclose(subset.mean, everything.mean)
    assert records.stats(list(records.song_labels)) is everything


def test_validation_dirs_hold_out_their_songs_and_are_checked(records, demo_corpus, tmp_path):
    config = tiny_config(records, tmp_path, validation_dirs=(demo_corpus.real,))
    records = SongDataLoader(config).records()
    split = choose_split(config, records)
    assert split.how == "dirs" and {records.song_labels[p] for p in split.held_out} == {"real"}
    assert len(split.held_out) == 2
    from utils.data.shards import DataError

    with pytest.raises(DataError, match="singer"):  # a conditional model trains every singer
        choose_split(config.replace(conditional=True), records)
    with pytest.raises(DataError, match="no song of --validation_dir"):
        choose_split(config.replace(validation_dirs=(str(tmp_path),)), records)


# ---------------------------------------------------------------------------------- one run
def test_each_epoch_validates_on_the_held_out_songs_only(validated, monkeypatch):
    trainer, result, messages = validated
    config = trainer.config
    split = ValidationSplit.load(os.path.join(config.checkpoint_dir, "validation.json"))
    assert split == trainer.data.split and split.how == "split" and len(split.held_out) == 2
    assert set(trainer.data.training_songs) == set(trainer.records.song_labels) - set(split.held_out)
    # The normalisation comes from the training songs.
    assert trainer.stats.source == trainer.records.stats(trainer.data.training_songs).source
    assert trainer.stats.source != trainer.records.stats().source
    val = scalars(config.logdir, "val_bits_per_dim")
    assert sorted(val) == [6, 12] and all(math.isfinite(v) for v in val.values())
    nll = scalars(config.logdir, "val_nll")
    assert nll[12] == pytest.approx(val[12] * config.dims * math.log(2), rel=1e-5)
    assert [h["val_bits_per_dim"] for h in result.history] == pytest.approx([val[6], val[12]])
    lines = [m for m in messages if m.startswith("epoch ")]
    assert len(lines) == 2 and all(", val " in line and " bits/dim" in line for line in lines)
    assert any(m.startswith("validation: 2 held-out song(s) (real 1, virtual 1) of 4")
               for m in messages)
    # The validation is the model's float32 bits/dim over every aligned patch of those songs.
    batches = trainer.data.validation_batches(config)
    bits = np.concatenate([trainer.model.bits_per_dim(b).numpy() for b in batches])
    assert float(np.mean(bits)) == pytest.approx(val[12], abs=1e-4)
    # The training batches are drawn from the training songs only.
    asked = {}
    original = trainer.records.training_dataset

    def spy(*args, **kwargs):
        asked.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer.records, "training_dataset", spy)
    next(iter(trainer.training_dataset(0)))
    assert set(asked["songs"]) == set(trainer.data.training_songs)
    assert not set(asked["songs"]) & set(split.held_out)


def test_best_is_a_run_folder_of_the_lowest_validation_weights(validated):
    trainer, result, _ = validated
    best = os.path.join(trainer.config.checkpoint_dir, "best")
    with open(os.path.join(best, "best.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    vals = [h["val_bits_per_dim"] for h in result.history]
    assert record["val_bits_per_dim"] == pytest.approx(min(vals))
    assert record["step"] == result.history[int(np.argmin(vals))]["step"]
    codec = load_for_inference(best)  # what migrate.py, evaluate.py and the notebooks call
    assert codec.config.checkpoint_dir == best
    assert codec.config.replace(checkpoint_dir=trainer.config.checkpoint_dir) == trainer.config
    np.testing.assert_array_equal(codec.stats.mean, trainer.stats.mean)
    if record["step"] == result.step:  # the last epoch was the best: the same weights
        batch = trainer.init_batch()
        np.testing.assert_allclose(codec.model.encode(batch)[0], trainer.model.encode(batch)[0],
                                   atol=1e-6)
    assert not [n for n in os.listdir(trainer.config.checkpoint_dir) if n.startswith(".best")]


def test_a_resume_keeps_the_split_and_best_and_stops_early(validated, tmp_path):
    trainer, result, _ = validated
    # Asked for another split, the resumed run keeps the saved one.
    config = copy_run(trainer.config, tmp_path, epochs=6, validation_split=0.9,
                      early_stopping_patience=2)
    messages = []
    resumed = Trainer(config, log=messages.append, progress=False)
    assert resumed.data.split == trainer.data.split
    assert any("keeping the validation split saved in" in m for m in messages)
    best = resumed.steering.best
    assert best["step"] in (6, 12)
    # A curve that never goes below the best again: best/ is kept, and after 2 epochs it stops.
    before = os.stat(os.path.join(config.checkpoint_dir, "best", "glow.weights.h5")).st_mtime_ns
    worse = best["val_bits_per_dim"] + 1.0
    resumed.steering.validator = lambda: ValidationMetrics(worse, worse * 512 * math.log(2), 9)
    epochs_left = 2 - (12 - best["step"]) // 6
    out = resumed.fit()
    assert out.stopped_early and not out.interrupted
    assert out.step == 12 + 6 * epochs_left
    assert any(m.startswith(f"early stopping at epoch {out.step // 6} (step {out.step})")
               for m in messages)
    assert any(m.startswith("done at step") for m in messages)  # weights and wavs written
    after = os.stat(os.path.join(config.checkpoint_dir, "best", "glow.weights.h5")).st_mtime_ns
    assert after == before
    # Rerun, it is still out of patience: nothing to train.
    again = []
    rerun = Trainer(config, log=again.append, progress=False).fit()
    assert rerun.step == out.step and not rerun.history
    assert any("raise --early_stopping_patience" in m for m in again)


def test_an_interrupted_best_swap_is_put_back(validated, tmp_path):
    trainer, _, _ = validated
    config = copy_run(trainer.config, tmp_path)
    best = os.path.join(config.checkpoint_dir, "best")
    os.rename(best, os.path.join(config.checkpoint_dir, ".best-old"))  # a crash between renames
    os.makedirs(os.path.join(config.checkpoint_dir, ".best-new-x"))
    resumed = Trainer(config, log=lambda _: None, progress=False)
    assert resumed.steering.best is not None and os.path.isdir(best)
    assert not [n for n in os.listdir(config.checkpoint_dir) if n.startswith(".best")]
