"""Tests of the distributed training loop (pipeline.py) on a tiny model and a tiny corpus.

One short run (module fixture ``trained``) is shared by the tests that only inspect its results;
tests that train on copy its checkpoint folder. Multi-device and multi-worker runs go to
subprocesses because TensorFlow's devices and cluster are fixed when it starts.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from common_definitions import Config
from data_loader import Records, SongDataLoader
from model import Glow
from pipeline import (
    CheckpointMismatch,
    Trainer,
    TrainingDiverged,
    WarmupSchedule,
    cluster_size,
    spectrogram_image,
)
from utils.audio.features import FeatureStats
from utils.runs.run_folder import load_for_inference
from tests.conftest import copy_run as shared_copy_run
from utils.evaluation.metrics import snr_db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCALAR_TAGS = {"nll", "bits_per_dim", "z_mean", "z_var", "learning_rate", "skipped_steps"}


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The shared tiny run (tests/conftest.py): 2 epochs x 6 steps, checkpoints every 4 steps."""
    return tiny_run


def copy_run(trained, folder, **changes) -> Config:
    """A config whose checkpoint folder is a copy of the shared run's."""
    return shared_copy_run(trained.config, folder, **changes)


def variables_of(trainer):
    return ([v.numpy().copy() for v in trainer.model.variables],
            [np.array(v).copy() for v in trainer.optimizer.variables])


def read_events(logdir):
    """tag -> (plugin name, [(step, summary value)]) from the event files in ``logdir``."""
    found = {}
    for name in sorted(os.listdir(logdir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                plugin, steps = found.get(value.tag, ("", []))
                # TF2 writers store a tag's metadata with its first value only.
                found[value.tag] = (plugin or value.metadata.plugin_data.plugin_name,
                                    steps + [(event.step, value)])
    return found


# ---------------------------------------------------------------------------------- units
def test_warmup_schedule_is_linear_then_flat():
    schedule = WarmupSchedule(1e-3, 4)
    values = [float(schedule(step)) for step in range(6)]
    np.testing.assert_allclose(values, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)
    assert float(WarmupSchedule(1e-3, 0)(0)) == pytest.approx(1e-3)


def test_cluster_size_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_size() == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}))
    assert cluster_size() == 2
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        cluster_size()


def test_spectrogram_image_is_rgb_with_low_frequencies_at_the_bottom():
    log_mag = np.full((10, 5), -9.0, np.float32)
    log_mag[:, 0] = 0.0  # loud lowest bin
    image = spectrogram_image(log_mag)
    assert image.shape == (5, 10, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image[-1].mean() > image[0].mean()


# ---------------------------------------------------------------------------------- one run
def test_a_tiny_run_lowers_the_loss(trained):
    assert trained.result.step == 12 and not trained.result.interrupted
    assert [h["epoch"] for h in trained.result.history] == [1, 2]
    assert all(math.isfinite(h["bits_per_dim"]) for h in trained.result.history)
    assert trained.after < trained.before - 0.05, (trained.before, trained.after)
    assert any("epoch 2/2 (step 12)" in m and "bits/dim" in m for m in trained.messages)


def test_checkpoint_folder_layout(trained):
    config, trainer = trained.config, trained.trainer
    latest = tf.train.latest_checkpoint(config.checkpoint_dir)
    assert latest.endswith("ckpt-12")
    assert tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE") == 12
    assert tf.train.load_variable(latest, "skipped_steps/.ATTRIBUTES/VARIABLE_VALUE") == 0
    kept = tf.train.get_checkpoint_state(config.checkpoint_dir).all_model_checkpoint_paths
    assert len(kept) == config.max_checkpoints
    assert Config.load(os.path.join(config.checkpoint_dir, "config.json")) == config
    stats = FeatureStats.load(os.path.join(config.checkpoint_dir, "feature_stats.json"))
    np.testing.assert_array_equal(stats.mean, trainer.stats.mean)
    # The exported .weights.h5 rebuilds the same map.
    model = Glow.from_config(config)
    model.load_weights(os.path.join(config.checkpoint_dir, "glow.weights.h5"))
    np.testing.assert_allclose(model.encode(trained.batch)[0], trainer.model.encode(trained.batch)[0],
                               atol=1e-5)


def test_event_files_hold_scalars_audio_and_spectrograms(trained):
    events = read_events(trained.config.logdir)
    assert SCALAR_TAGS <= set(events)
    for name in ("reconstruction", "sample"):
        plugin, steps = events[name]
        assert plugin == "audio"
        assert [s for s, _ in steps] == [6, 12]  # once per epoch
        wav = tf.make_ndarray(steps[-1][1].tensor).reshape(-1)[0]
        assert wav[:4] == b"RIFF"
        assert events[f"{name}_spectrogram"][0] == "images"
    bits = [float(tf.make_ndarray(v.tensor)) for _, v in events["bits_per_dim"][1]]
    assert all(math.isfinite(b) for b in bits) and len(bits) >= 4


def test_reconstruction_and_sample_wavs(trained):
    import soundfile

    out = trained.config.output_dir
    original, rate = soundfile.read(os.path.join(out, "original.wav"), dtype="float32")
    rebuilt, _ = soundfile.read(os.path.join(out, "reconstruction.wav"), dtype="float32")
    sample, _ = soundfile.read(os.path.join(out, "sample.wav"), dtype="float32")
    assert rate == trained.config.sampling_rate
    assert len(rebuilt) == len(original) and len(sample) > 0
    assert snr_db(original, rebuilt) > 30.0  # exact inverse up to 16-bit PCM


def test_load_for_inference(trained, tmp_path):
    codec = load_for_inference(trained.config.checkpoint_dir)
    model, config, stats = codec.model, codec.config, codec.stats
    assert config == trained.config and model.is_initialized()
    np.testing.assert_array_equal(stats.std, trained.trainer.stats.std)
    np.testing.assert_allclose(model.encode(trained.batch)[0],
                               trained.trainer.model.encode(trained.batch)[0], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_for_inference(str(tmp_path / "missing"))
    # A config.json of a smaller model would restore partially without the variable count.
    copied = copy_run(trained, tmp_path / "smaller")
    trained.config.replace(k_glow=1).save(os.path.join(copied.checkpoint_dir, "config.json"))
    with pytest.raises(CheckpointMismatch, match="does not belong to this checkpoint"):
        load_for_inference(copied.checkpoint_dir)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_for_inference(str(tmp_path))


def test_a_checkpoint_of_another_config_is_refused(trained, tmp_path):
    config = copy_run(trained, tmp_path)
    with pytest.raises(CheckpointMismatch, match="k_glow=2 \\(now 3\\)") as caught:
        Trainer(config.replace(k_glow=3), progress=False)
    assert "\n" not in str(caught.value)
    with pytest.raises(CheckpointMismatch, match="hidden_channels"):
        Trainer(config.replace(hidden_channels=16), progress=False)


# ---------------------------------------------------------------------------------- training more
def test_restart_resumes_step_and_optimizer_state(trained, tmp_path):
    config = copy_run(trained, tmp_path, epochs=3)
    messages = []
    trainer = Trainer(config, log=messages.append, progress=False)
    assert any(m.startswith("resumed from") and m.endswith("at step 12") for m in messages)
    assert trainer.global_step == 12 and trainer.model.is_initialized()
    weights, slots = variables_of(trainer)
    old_weights, old_slots = variables_of(trained.trainer)
    assert int(trainer.optimizer.iterations.numpy()) == 12
    for new, old in zip(weights + slots, old_weights + old_slots):
        np.testing.assert_array_equal(new, old)
    assert not trainer.initialize(trained.batch * 3.0)  # restored: never re-initialised
    result = trainer.fit()
    assert result.step == 18 and [h["epoch"] for h in result.history] == [3]
    assert tf.train.latest_checkpoint(config.checkpoint_dir).endswith("ckpt-18")


def test_ctrl_c_saves_a_checkpoint_and_stops(trained, tmp_path):
    config = copy_run(trained, tmp_path, epochs=1000)

    def log(message):
        if message.startswith("training "):  # the SIGINT handler is in place by now
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(config, log=log, progress=False)
    handler = signal.getsignal(signal.SIGINT)
    result = trainer.fit()
    assert result.interrupted and result.step == 12 + config.log_every
    assert result.checkpoint.endswith(f"ckpt-{result.step}")
    assert tf.train.load_variable(result.checkpoint, "step/.ATTRIBUTES/VARIABLE_VALUE") == result.step
    assert signal.getsignal(signal.SIGINT) is handler  # restored after training


class NaNRecords(Records):
    """Records whose training batches are full of NaN."""

    def training_dataset(self, *args, **kwargs):
        return super().training_dataset(*args, **kwargs).map(lambda x: x * float("nan"))


class NaNLoader(SongDataLoader):
    def records(self, records_dir=None):
        return NaNRecords(self.config, records_dir)


def test_nonfinite_steps_are_skipped_then_stop_training(trained, tmp_path):
    config = copy_run(trained, tmp_path, epochs=3, max_nonfinite_steps=2)
    messages = []
    trainer = Trainer(config, loader=NaNLoader(config), log=messages.append, progress=False)
    weights, slots = variables_of(trainer)
    nan_batch = tf.data.Dataset.from_tensors(trained.batch * float("nan")).repeat()
    metrics = trainer.train_steps(iter(trainer.distribute(nan_batch)), 1)
    assert metrics.skipped == 1 and metrics.applied == 0
    assert trainer.global_step == 13 and int(trainer.skipped_steps.numpy()) == 1
    new_weights, new_slots = variables_of(trainer)
    for new, old in zip(new_weights + new_slots, weights + slots):
        np.testing.assert_array_equal(new, old)  # weights and Adam state untouched

    finite = tf.data.Dataset.from_tensors(trained.batch).repeat()
    assert trainer.train_steps(iter(trainer.distribute(finite)), 1).applied == 1
    assert all(np.isfinite(w).all() for w in variables_of(trainer)[0])

    with pytest.raises(TrainingDiverged, match="2 consecutive non-finite steps") as caught:
        trainer.fit()
    assert "ckpt-12" in str(caught.value) and "\n" not in str(caught.value)
    assert tf.train.latest_checkpoint(config.checkpoint_dir).endswith("ckpt-12")
    assert any("skipped 2 non-finite" in m for m in messages)
    assert all(np.isfinite(w).all() for w in variables_of(trainer)[0])


# ---------------------------------------------------------------------------------- distribution
def run_script(tmp_path, name, code, args=(), env=None, timeout=240):
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.Popen([sys.executable, str(path), *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_json(process, timeout=240):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


REPLICA_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from common_definitions import Config
from pipeline import Trainer
from utils.audio.features import FeatureStats
from utils.training.data import TrainingData
from utils.training.validation import Validator

# clip_norm is out of reach: a gradient summed twice would then show in Adam's moments.
# K=1 because tracing dominates the run time and grows with the number of flow steps.
config = Config(n_fft=62, hop_length=16, window_size=16, k_glow=1, l_glow=2, hidden_channels=8,
                batch_size=8, warmup_steps=2, learning_rate=2e-3, clip_norm=1e6,
                checkpoint_dir=sys.argv[1] + "/one", records_dir=sys.argv[1] + "/none")
scales = np.array([1.0, 2.0, 0.5, 1.5], np.float32)[:, None, None, None, None]
batches = np.random.default_rng(0).standard_normal((4, 8, 16, 32, 1)).astype(np.float32) * scales
results = []
for devices, folder in ((["/cpu:0"], "/one"), (["/cpu:0", "/cpu:1"], "/two")):
    trainer = Trainer(config.replace(checkpoint_dir=sys.argv[1] + folder),
                      strategy=tf.distribute.MirroredStrategy(devices), log=lambda _: None,
                      data=TrainingData(None, FeatureStats.identity(config)))
    if not results:
        initial = trainer.model.get_weights()
    trainer.model.set_weights(initial)  # the same starting point, whatever the random state
    trainer.initialize(batches[0])
    if not results:
        start = trainer.model.get_weights()
    iterator = iter(trainer.distribute(tf.data.Dataset.from_tensor_slices(batches[1:])))
    metrics = trainer.train_steps(iterator, 3)
    # The held-out bits/dim, computed in cross-replica context over mirrored variables.
    held_out = tf.data.Dataset.from_tensor_slices(batches[0]).batch(3)
    validation = Validator(trainer.model, trainer.config, held_out, trainer.collectives)()
    results.append((trainer, metrics, validation))
(one, m1, v1), (two, m2, v2) = results
diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                        for x, y in zip(a, b))
print(json.dumps({
    "replicas": [one.strategy.num_replicas_in_sync, two.strategy.num_replicas_in_sync],
    "weights": diff(one.model.get_weights(), two.model.get_weights()),
    "slots": diff(one.optimizer.variables, two.optimizer.variables),
    "moved": diff(one.model.get_weights(), start),
    "bits": [m1.bits_per_dim, m2.bits_per_dim], "iterations": int(two.optimizer.iterations.numpy()),
    "val": [v1.bits_per_dim, v2.bits_per_dim], "patches": [v1.patches, v2.patches],
    "direct": float(np.mean(one.model.bits_per_dim(batches[0]).numpy())),
}))
"""


def test_two_replicas_make_the_same_update_as_one(tmp_path):
    report = last_json(run_script(tmp_path, "replicas.py", REPLICA_SCRIPT, [str(tmp_path)]))
    assert report["replicas"] == [1, 2]
    assert report["iterations"] == 3
    assert report["moved"] > 1e-3, report  # it did train
    assert report["weights"] < 1e-5, report
    assert report["slots"] < 1e-5, report
    assert report["bits"][0] == pytest.approx(report["bits"][1], rel=1e-5)
    assert report["patches"] == [8, 8]
    assert report["val"][0] == pytest.approx(report["direct"], abs=1e-5)
    assert report["val"][1] == pytest.approx(report["val"][0], abs=1e-4)


WORKER_SCRIPT = """
import json, os, sys
import numpy as np
index, ports, records, folder = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
    "task": {"type": "worker", "index": index}})
from common_definitions import Config
from pipeline import Trainer

# K=L=1: two workers trace on two cores at once, and tracing grows with the number of layers.
config = Config(n_fft=62, hop_length=16, window_size=16, k_glow=1, l_glow=1, hidden_channels=8,
                batch_size=8, warmup_steps=2, learning_rate=2e-3, records_dir=records,
                checkpoint_dir=folder + "/ck", logdir=folder + "/logs", output_dir=folder + "/out")
trainer = Trainer(config, log=lambda _: None)   # MultiWorkerMirroredStrategy from TF_CONFIG
trainer.initialize()
metrics = trainer.train_steps(iter(trainer.distribute(trainer.training_dataset())), 3)
saved = trainer.save()
np.savez(folder + f"/worker{index}.npz", *trainer.model.get_weights(),
         *[np.asarray(v) for v in trainer.optimizer.variables])
print(json.dumps({"chief": trainer.is_chief, "replicas": trainer.strategy.num_replicas_in_sync,
                  "step": trainer.global_step, "saved": saved, "bits": metrics.bits_per_dim}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_train_to_identical_weights(tiny_records, tmp_path):
    ports = f"{free_port()},{free_port()}"
    workers = [run_script(tmp_path, f"worker{i}.py", WORKER_SCRIPT,
                          [str(i), ports, tiny_records, str(tmp_path)]) for i in range(2)]
    try:
        reports = [last_json(worker) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [r["chief"] for r in reports] == [True, False]
    assert all(r["replicas"] == 2 and r["step"] == 3 for r in reports)
    assert reports[0]["saved"].endswith("ckpt-3") and reports[1]["saved"] is None
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert len(first.files) == len(second.files) > 5
    for key in first.files:
        np.testing.assert_allclose(first[key], second[key], rtol=0, atol=1e-7, err_msg=key)
    assert os.listdir(tmp_path / "ck") and math.isfinite(reports[0]["bits"])


VALIDATING_WORKER_SCRIPT = """
import json, os, sys
index, ports, records, folder = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
    "task": {"type": "worker", "index": index}})
from common_definitions import Config
from pipeline import Trainer

config = Config(n_fft=62, hop_length=16, window_size=16, k_glow=1, l_glow=1, hidden_channels=8,
                batch_size=8, warmup_steps=2, learning_rate=2e-3, records_dir=records,
                validation_split=0.5, epochs=2, steps_per_epoch=2, log_every=2,
                griffin_lim_iters=1, early_stopping_patience=5, checkpoint_dir=folder + "/ck",
                logdir=folder + "/logs", output_dir=folder + "/out")
trainer = Trainer(config, log=lambda _: None, progress=False)
result = trainer.fit()
print(json.dumps({"chief": trainer.is_chief, "step": result.step,
                  "val": [h["val_bits_per_dim"] for h in result.history],
                  "held_out": list(trainer.data.split.held_out)}))
"""


def test_two_workers_validate_alike_and_only_the_chief_keeps_best(tiny_records, tmp_path):
    records = str(tmp_path / "records")  # a copy: the training songs' statistics go beside it
    shutil.copytree(tiny_records, records)
    ports = f"{free_port()},{free_port()}"
    workers = [run_script(tmp_path, f"worker{i}.py", VALIDATING_WORKER_SCRIPT,
                          [str(i), ports, records, str(tmp_path)]) for i in range(2)]
    try:
        reports = [last_json(worker) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [r["chief"] for r in reports] == [True, False]
    assert all(r["step"] == 4 for r in reports)
    assert reports[0]["held_out"] == reports[1]["held_out"] and len(reports[0]["held_out"]) == 2
    assert reports[0]["val"] == reports[1]["val"] and all(math.isfinite(v) for v in reports[0]["val"])
    best = tmp_path / "ck" / "best"
    assert (best / "glow.weights.h5").is_file() and (tmp_path / "ck" / "validation.json").is_file()
    assert load_for_inference(str(best)).model.is_initialized()
