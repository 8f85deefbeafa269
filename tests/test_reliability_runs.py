"""Fault injection into run folders (issue 15, "run folders"): each fault gives one line that
names the path and what to do, no traceback, nothing earlier lost, and the run goes on where the
data allows.

- the ``checkpoint`` index missing, garbled or stale: the run resumes from the newest ``ckpt-N``
  on disk (one warning line) and the index is rewritten; the model-configuration refusal still
  applies;
- the newest checkpoint truncated or garbled: one warning line naming it, the previous one is
  restored (training and inference); none readable: one error line;
- a foreign ``feature_stats.json`` (beside the checkpoints or in ``best/``) and reference latent
  statistics of other weights are refused on one line; folders from before the tie still load;
- a second writer on a checkpoint folder is refused; a lock left by a dead process is taken over;
- a full disk while saving a checkpoint, a run file, ``best/`` or the exported weights ends the
  run on one line (exit 1) with the temporary files gone and the last checkpoint intact;
- ``--feature world`` without pyworld is refused before any work;
- :func:`utils.files.replace_folder`, the one folder swap.

Every run starts from a copy of the shared tiny run (``tests.conftest.copy_run``), whose
checkpoint folder holds ckpt-6, ckpt-8 and ckpt-12 with the index naming ckpt-12.
"""

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
import types
import warnings

import numpy as np
import pytest
import tensorflow as tf

import train
from tests.conftest import copy_run, tiny_config
from utils.audio.features import FeatureStats
from utils.files import replace_folder, settle_folder
from utils.runs.checkpoint_files import CheckpointDamaged, CheckpointMismatch, write_index
from utils.runs.run_folder import RunFolder, SaveFailed, check_checkpoint_dir, load_for_inference



def enospc(*where, code=errno.ENOSPC):
    return OSError(code, os.strerror(code), *where)


def full_disk_message(path, last, code=errno.ENOSPC):
    """The one line (a regular expression) of a save of ``path`` that failed with ``code``,
    ``last`` kept."""
    advice = (r", [0-9.]+ MiB left on it; free some space and run again" if code == errno.ENOSPC
              else "; choose a writable location")
    return (rf"cannot write {re.escape(path)}: {re.escape(os.strerror(code))}{advice} "
            rf"\(nothing was replaced\); the last good checkpoint is {re.escape(last)}")


# ---------------------------------------------------------------------------------- helpers
def argv_of(config, **changes):
    """train.py's command line for ``config`` (the tiny one) with ``changes``."""
    config = config.replace(**changes)
    flags = {"n_fft": 62, "hop_length": 16, "window_size": 16, "k_glow": config.k_glow,
             "l_glow": 2, "hidden_channels": 8, "batch_size": 8, "log_every": 3,
             "griffin_lim_iters": 2, "warmup_steps": 2, "learning_rate": 2e-3,
             "validation_split": 0.0, "records_dir": config.records_dir,
             "checkpoint_dir": config.checkpoint_dir, "logdir": config.logdir,
             "output_dir": config.output_dir, "epochs": config.epochs,
             "steps_per_epoch": config.steps_per_epoch,
             "checkpoint_every": config.checkpoint_every}
    return [token for name, value in flags.items() for token in (f"--{name}", str(value))] + [
        "--no_progress"]


def run_train(capsys, argv):
    """``train.main(argv)`` in this process: (status, stdout, stderr)."""
    status = train.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def one_error(err, prog="train.py"):
    """The one ``prog: error:`` line of ``err``, which must be its last line (no traceback)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


def warning_lines(err, prog="train.py"):
    return [line for line in err.splitlines() if line.startswith(f"{prog}: warning:")]


def on_disk(folder):
    """Steps of the ``ckpt-N`` files and folders in ``folder``."""
    return sorted({int(name[5:].split(".")[0].split("_")[0]) for name in os.listdir(folder)
                   if name.startswith("ckpt-")})


def snapshot(folder):
    """path -> bytes of every file under ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                files[os.path.relpath(os.path.join(root, name), folder)] = handle.read()
    return files


def quiet_trainer(config, messages):
    """``Trainer(config)`` and the warnings it raised (their messages)."""
    from pipeline import Trainer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(config, log=messages.append, progress=False)
    return trainer, [str(w.message) for w in caught if config.checkpoint_dir in str(w.message)]


def damage(prefix, how):
    """Truncate ``prefix``'s data file to half, or overwrite bytes of its ``.index``."""
    if how == "truncated":
        data = prefix + ".data-00000-of-00001"
        with open(data, "r+b") as handle:
            handle.truncate(os.path.getsize(data) // 2)
    else:
        with open(prefix + ".index", "r+b") as handle:
            handle.seek(8)
            handle.write(b"\xde\xad\xbe\xef" * 8)


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the tiny run: its Config, checkpoint folder and a path in it."""
    config = copy_run(tiny_run.config, tmp_path / "run")
    folder = config.checkpoint_dir
    return types.SimpleNamespace(config=config, ck=folder,
                                 at=lambda name: os.path.join(folder, name))


# ---------------------------------------------------------------------------------- the index
@pytest.mark.parametrize("case", ["missing", "garbled", "stale"])
def test_a_broken_index_resumes_from_the_newest_checkpoint_on_disk_and_is_rewritten(run, case):
    index = run.at("checkpoint")
    if case == "missing":
        os.remove(index)
    else:
        stale = b'model_checkpoint_path: "ckpt-99"\nall_model_checkpoint_paths: "ckpt-99"\n'
        with open(index, "wb") as handle:
            handle.write(b"\x00\xff garbage {{" if case == "garbled" else stale)
    # The model-configuration refusal applies whatever the state of the index.
    with pytest.raises(CheckpointMismatch, match=r"k_glow=2 \(now 3\)"):
        check_checkpoint_dir(run.config.replace(k_glow=3))
    # Inference loads the same checkpoint, says so, and writes nothing.
    before = snapshot(run.ck)
    with pytest.warns(UserWarning) as caught:
        load_for_inference(run.ck)
    assert [str(w.message) for w in caught] == [f"{index} is {case}: loading ckpt-12 found on disk"]
    assert snapshot(run.ck) == before
    messages = []
    trainer, warned = quiet_trainer(run.config, messages)
    assert warned == [f"{index} is {case}: resuming from ckpt-12 found on disk"]
    assert trainer.global_step == 12 and f"resumed from {run.at('ckpt-12')} at step 12" in messages
    state = tf.train.get_checkpoint_state(run.ck)
    assert state.model_checkpoint_path == run.at("ckpt-12")
    assert list(state.all_model_checkpoint_paths) == [run.at(f"ckpt-{n}") for n in (6, 8, 12)]


def test_train_py_over_a_missing_index_resumes_and_trains_on(run, capsys):
    os.remove(run.at("checkpoint"))
    status, _, err = run_train(capsys, argv_of(run.config, k_glow=3))
    assert status == 2 and "k_glow=2 (now 3)" in one_error(err)
    status, out, err = run_train(capsys, argv_of(run.config, epochs=3))
    assert status == 0, err
    assert warning_lines(err) == [f"train.py: warning: {run.at('checkpoint')} is missing: "
                                  "resuming from ckpt-12 found on disk"]
    assert f"resumed from {run.at('ckpt-12')} at step 12" in out
    assert tf.train.latest_checkpoint(run.ck) == run.at("ckpt-18")
    # The rewritten index let the manager keep three and delete the older ones found on disk.
    assert on_disk(run.ck) == [12, 16, 18]


# ---------------------------------------------------------------------------------- damage
@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(run, how):
    damage(run.at("ckpt-12"), how)
    with pytest.warns(UserWarning) as caught:
        codec = load_for_inference(run.ck)
    assert [str(w.message).split(" (")[0] for w in caught] == [f"{run.at('ckpt-12')} is damaged"]
    assert str(caught[0].message).endswith("; falling back to the previous checkpoint")
    messages = []
    trainer, warned = quiet_trainer(run.config, messages)
    assert [w.split(" (")[0] for w in warned] == [f"{run.at('ckpt-12')} is damaged"]
    assert trainer.global_step == 8 and f"resumed from {run.at('ckpt-8')} at step 8" in messages
    for mine, theirs in zip(codec.model.variables, trainer.model.variables):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    # The index no longer names the damaged one.
    assert tf.train.latest_checkpoint(run.ck) == run.at("ckpt-8")


def test_no_readable_checkpoint_is_one_line_and_changes_nothing(run, capsys):
    for step in (6, 8, 12):
        damage(run.at(f"ckpt-{step}"), "truncated")
    before = snapshot(run.ck)
    status, _, err = run_train(capsys, argv_of(run.config, epochs=3))
    assert status == 2
    assert one_error(err) == (
        f"train.py: error: no checkpoint in {run.ck} can be read (ckpt-12, ckpt-8, ckpt-6 "
        "damaged; ckpt-6: Read less bytes than requested): move the folder away or pass another "
        "--checkpoint_dir")
    assert [line.split(" (")[0] for line in warning_lines(err)] == [
        f"train.py: warning: {run.at('ckpt-12')} is damaged",
        f"train.py: warning: {run.at('ckpt-8')} is damaged"]
    assert snapshot(run.ck) == before
    # Inference still has the exported weights, with a warning.
    with pytest.warns(UserWarning) as caught:
        assert load_for_inference(run.ck).model.is_initialized()
    assert [str(w.message).split(" (")[0] for w in caught] == [
        f"{run.at('ckpt-12')} is damaged", f"{run.at('ckpt-8')} is damaged",
        f"no checkpoint in {run.ck} can be read"]
    assert str(caught[-1].message).endswith(f"; loading {run.at('glow.weights.h5')} instead")


def test_an_index_without_checkpoint_files_is_refused(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    config = tiny_config(str(tmp_path / "rec"), tmp_path)
    with pytest.raises(CheckpointDamaged, match=re.escape(
            f"{folder}/checkpoint is stale and {folder} holds no ckpt-N files: move the folder "
            "away or pass another --checkpoint_dir")):
        check_checkpoint_dir(config)


# ---------------------------------------------------------------------------------- the tie
def foreign_stats(path):
    stats = FeatureStats.load(path)
    FeatureStats(stats.mean + 0.5, stats.std, stats.fields, stats.count, stats.source,
                 stats.channels).save(path)


def test_a_foreign_feature_stats_file_is_refused_for_training_and_inference(run, tiny_run,
                                                                           capsys):
    stats_path = run.at("feature_stats.json")
    expected = (f"{stats_path} does not hold the feature statistics {run.at('ckpt-12')} was "
                "trained with (its recorded digest differs): put back that run's own "
                "feature_stats.json or use another --checkpoint_dir")
    # best/ records the digest in best.json.
    folder = RunFolder(run.config, tiny_run.trainer.checkpoint, tiny_run.trainer.step)
    best = folder.write_best(tiny_run.trainer.model, tiny_run.trainer.stats, (),
                             {"step": 12, "epoch": 2, "val_bits_per_dim": 1.0})
    assert load_for_inference(best).model.is_initialized()
    foreign_stats(stats_path)
    foreign_stats(os.path.join(best, "feature_stats.json"))
    status, _, err = run_train(capsys, argv_of(run.config, epochs=3))
    assert status == 2 and one_error(err) == f"train.py: error: {expected}"
    assert not os.path.exists(run.config.output_dir)  # refused before any work
    with pytest.raises(CheckpointMismatch) as caught:
        load_for_inference(run.ck)
    assert str(caught.value) == expected
    with pytest.raises(CheckpointMismatch, match=re.escape(
            f"{best}/feature_stats.json does not hold the feature statistics {best}/best.json")):
        load_for_inference(best)


def test_a_run_folder_from_before_the_tie_still_loads(run, tiny_run, tmp_path):
    # A checkpoint saved as before the tie: the run's objects, no digest.
    trainer = tiny_run.trainer
    legacy = tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer,
                                 step=trainer.step, skipped_steps=trainer.skipped_steps)
    saved = tf.train.CheckpointManager(legacy, str(tmp_path / "legacy"), 1).save(12)
    for name in os.listdir(run.ck):
        if name.startswith("ckpt-"):
            os.remove(run.at(name))
    for name in os.listdir(tmp_path / "legacy"):
        os.replace(str(tmp_path / "legacy" / name), run.at(name))
    assert saved.endswith("ckpt-12") and on_disk(run.ck) == [12]
    assert "feature_stats_digest/.ATTRIBUTES/VARIABLE_VALUE" not in dict(
        tf.train.list_variables(run.at("ckpt-12")))
    foreign_stats(run.at("feature_stats.json"))  # nothing to check it against: accepted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_checkpoint_dir(run.config) == run.at("ckpt-12")
        assert load_for_inference(run.ck).model.is_initialized()


def test_reference_statistics_of_other_weights_are_refused(run, tiny_run, demo_corpus,
                                                           tmp_path, capsys):
    import migrate
    from utils.errors import MigrationError
    from utils.migration.folders import Console
    from utils.migration.targets import StatsSource, compute_stats, open_stats
    from utils.runs.latent_stats import LatentStats, weights_fingerprint

    latest = load_for_inference(run.ck)  # ckpt-12's weights
    stats = compute_stats(StatsSource("reference", None, demo_corpus.real), latest,
                          Console("test"))
    assert stats.weights == weights_fingerprint(latest.model)
    path = str(tmp_path / "reference.npz")
    stats.save(path)
    assert open_stats(path, latest, "reference").stats.weights == stats.weights
    # The same run at ckpt-8: the same configuration, other weights.
    earlier = copy_run(run.config, tmp_path / "earlier").checkpoint_dir
    write_index(earlier, os.path.join(earlier, "ckpt-8"), [os.path.join(earlier, "ckpt-8")])
    other = load_for_inference(earlier)
    expected = (f"{path}: latent statistics were computed with other weights (fingerprint "
                f"{stats.weights}) than the checkpoint's ({weights_fingerprint(other.model)}): "
                "compute them again from the reference folder with this checkpoint")
    with pytest.raises(MigrationError) as caught:
        open_stats(path, other, "reference")
    assert str(caught.value) == expected
    status = migrate.main(["--checkpoint_dir", earlier, "--source",
                           os.path.join(demo_corpus.virtual, sorted(os.listdir(
                               demo_corpus.virtual))[0]),
                           "--reference", path, "--method", "midpoint",
                           "--output", str(tmp_path / "never.wav")])
    err = capsys.readouterr().err
    assert status == 2 and one_error(err, "migrate.py") == f"migrate.py: error: {expected}"
    assert not os.path.exists(tmp_path / "never.wav")
    # Statistics saved without a fingerprint (before the tie) are accepted on the configuration.
    stats.weights = ""
    stats.save(path)
    assert LatentStats.load(path, other.config, weights_fingerprint(other.model)).weights == ""


# ---------------------------------------------------------------------------------- the lock
def lock_file(folder, pid):
    with open(os.path.join(folder, ".lock"), "w", encoding="utf-8") as handle:
        json.dump({"pid": pid, "host": socket.gethostname(), "program": "train.py",
                   "since": time.time()}, handle)


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock_file(run.ck, holder.pid)
        before = snapshot(run.ck)
        status, _, err = run_train(capsys, argv_of(run.config))
        assert status == 2
        assert one_error(err) == (
            f"train.py: error: {run.ck} is in use by train.py (pid {holder.pid} on "
            f"{socket.gethostname()}): one run at a time writes it; wait for it to finish")
        assert snapshot(run.ck) == before  # the holder's lock and every file as they were
        assert load_for_inference(run.ck).model.is_initialized()  # reading takes no lock
    finally:
        holder.kill()
        holder.wait()
    lock_file(run.ck, holder.pid)  # now the pid of a process that is gone
    status, out, err = run_train(capsys, argv_of(run.config))  # 12 of 12 steps: nothing to do
    assert status == 0, err
    assert warning_lines(err) == [
        f"train.py: warning: {run.at('.lock')} was left by train.py (pid {holder.pid}), which "
        "is no longer running; taking the lock over"]
    assert f"resumed from {run.at('ckpt-12')} at step 12" in out
    assert not os.path.exists(run.at(".lock"))  # released at the end


# ---------------------------------------------------------------------------------- full disk
def test_a_full_disk_during_a_checkpoint_save_ends_on_one_line_with_the_last_one_intact(
        run, capsys, monkeypatch):
    original = tf.train.Checkpoint._write
    locked = []

    def write(self, prefix, options=None):
        if prefix.endswith("ckpt-16"):  # half a checkpoint, then the disk is full
            locked.append(os.path.exists(run.at(".lock")))
            os.makedirs(prefix + "_temp")
            with open(os.path.join(prefix + "_temp", "part-00000-of-00001.index"), "wb") as out:
                out.write(b"half")
            with open(prefix + ".data-00000-of-00001", "wb") as out:
                out.write(b"half")
            raise enospc(prefix)
        return original(self, prefix, options=options)

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write)
    status, out, err = run_train(capsys, argv_of(run.config, epochs=3))
    assert status == 1
    assert re.fullmatch("train.py: error: " + full_disk_message(run.at("ckpt-16"),
                                                                 run.at("ckpt-12")), one_error(err))
    assert locked == [True]  # the run held the folder's lock while saving
    assert on_disk(run.ck) == [6, 8, 12] and tf.train.latest_checkpoint(run.ck) == run.at("ckpt-12")
    assert not [n for n in os.listdir(run.ck) if n.startswith(".") or ".tmp" in n]
    assert tf.train.load_variable(run.at("ckpt-12"), "step/.ATTRIBUTES/VARIABLE_VALUE") == 12
    monkeypatch.undo()
    assert load_for_inference(run.ck).model.is_initialized()


@pytest.mark.parametrize("what,code", [
    ("config.json", errno.EACCES), ("feature_stats.json", errno.EROFS), ("best", errno.ENOSPC),
    ("glow.weights.h5", errno.ENOSPC)])
def test_a_failed_write_of_a_run_file_leaves_the_old_one_and_no_temporary_file(
        run, tiny_run, monkeypatch, what, code):
    import utils.files

    trainer = tiny_run.trainer
    folder = RunFolder(run.config, trainer.checkpoint, trainer.step)
    folder.last_checkpoint = run.at("ckpt-12")
    record = {"step": 12, "epoch": 2, "val_bits_per_dim": 1.0}
    folder.write_best(trainer.model, trainer.stats, (), record)
    folder.write_run_files(trainer.stats)  # the files as this Config writes them
    before = snapshot(run.ck)
    if what in ("config.json", "feature_stats.json"):
        rename = os.replace

        def full(source, target):
            if target.endswith(what):
                raise enospc(source, code=code)
            rename(source, target)

        monkeypatch.setattr(utils.files.os, "replace", full)
        write = lambda: folder.write_run_files(trainer.stats)  # noqa: E731
    else:
        def full(model, path, *args, **kwargs):  # Keras has begun the file
            with open(path, "wb") as handle:
                handle.write(b"half")
            raise enospc(path, code=code)

        monkeypatch.setattr(type(trainer.model), "save_weights", full)
        write = (lambda: folder.write_best(trainer.model, trainer.stats, (), record)) if (
            what == "best") else (lambda: folder.export_weights(trainer.model))  # noqa: E731
    with pytest.raises(SaveFailed) as caught:
        write()
    monkeypatch.undo()
    assert re.fullmatch(full_disk_message(run.at(what), run.at("ckpt-12"), code),
                        str(caught.value)), str(caught.value)
    assert snapshot(run.ck) == before  # the earlier file (or best/) whole, nothing left beside


def test_a_tensorflow_write_error_in_a_save_removes_the_half_checkpoint(run, tiny_run,
                                                                         monkeypatch):
    trainer = tiny_run.trainer
    step = tf.Variable(16, dtype=tf.int64)
    folder = RunFolder(run.config, trainer.checkpoint, step)
    folder.write_run_files(trainer.stats)
    before = snapshot(run.ck)

    def write(self, prefix, options=None):  # TensorFlow's writer reports the OS error itself
        os.makedirs(prefix + "_temp")
        with open(prefix + "_temp/part-00000-of-00001.data-00000-of-00001", "wb") as out:
            out.write(b"half")
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}_temp; No space left on "
                                               "device")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write)
    with pytest.raises(SaveFailed) as caught:
        folder.save(trainer.stats)
    assert str(caught.value) == (
        f"cannot write {run.at('ckpt-16')}: {run.at('ckpt-16')}_temp; No space left on device; "
        "free some space or choose a writable location and run again; the last good checkpoint "
        f"is {run.at('ckpt-12')}")
    assert snapshot(run.ck) == before


# ---------------------------------------------------------------------------------- world
def test_the_world_feature_without_pyworld_is_refused_before_any_work(tiny_records, tmp_path,
                                                                      capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyworld", None)  # import pyworld raises ImportError
    config = tiny_config(tiny_records, tmp_path)
    argv = ["--feature", "world", "--k_glow", "2", "--l_glow", "2", "--records_dir",
            tiny_records, "--checkpoint_dir", config.checkpoint_dir, "--logdir", config.logdir,
            "--output_dir", config.output_dir]
    status, _, err = run_train(capsys, argv)
    assert status == 2
    assert one_error(err) == ("train.py: error: the world feature needs pyworld (pip install -r "
                              "requirements.txt); it is not installed")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------- replace_folder
def fill(files):
    def build(scratch):
        for name, text in files.items():
            with open(os.path.join(scratch, name), "w", encoding="utf-8") as handle:
                handle.write(text)
    return build


def test_replace_folder_swaps_whole_folders_and_puts_the_old_one_back(tmp_path, monkeypatch):
    import utils.files

    target = str(tmp_path / "best")
    assert replace_folder(target, fill({"a": "1", "b": "1"})) == target
    replace_folder(target, fill({"a": "2"}))
    assert sorted(os.listdir(target)) == ["a"] and open(os.path.join(target, "a")).read() == "2"

    def broken(scratch):
        fill({"a": "3"})(scratch)
        raise enospc()

    with pytest.raises(OSError):
        replace_folder(target, broken)
    moves = []
    move = utils.files._move

    def second_fails(source, destination):
        moves.append(os.path.basename(destination))
        if len(moves) == 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        move(source, destination)

    monkeypatch.setattr(utils.files, "_move", second_fails)
    with pytest.raises(OSError):
        replace_folder(target, fill({"a": "4"}))
    monkeypatch.undo()
    assert moves == [".best-old", "best", "best"]  # aside, in (fails), back
    assert os.listdir(tmp_path) == ["best"] and open(os.path.join(target, "a")).read() == "2"
    # A crash between the two renames: the old one aside, a scratch folder left.
    os.rename(target, str(tmp_path / ".best-old"))
    os.makedirs(str(tmp_path / ".best-new-x"))
    settle_folder(target)
    assert os.listdir(tmp_path) == ["best"] and open(os.path.join(target, "a")).read() == "2"
