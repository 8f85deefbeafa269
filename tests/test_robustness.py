"""Fault injection (issue 8): SinGlow-TF2 keeps working and loses nothing.

Every test injects a fault into the real thing and checks what survives:

- a mixed folder of valid songs and every kind of bad file goes through the data_loader CLI,
  train.py and migrate.py; exactly the valid files are used and every bad one is named;
- train.py is SIGKILLed mid-epoch and rerun with the same command (it resumes from its last
  recorded checkpoint and ends at step 40), SIGKILLed inside a checkpoint save (the half-written
  checkpoint is never picked), and stopped by SIGINT or SIGTERM (it saves the step it reached;
  with two workers, SIGTERM to one stops both at the same step);
- NaN/Inf batches are injected into train.py's input: isolated ones are skipped and counted,
  a run of them stops training with one line and a finite last checkpoint;
- bad flags and folders are refused before any work, with nothing created;
- a 30-minute song is migrated with the memory of a 1-minute one;
- the same seed gives the same first loss.

The model is tiny (K=2, L=2, 8 hidden channels, 32 x 32 spectrogram patches at 8 kHz, so that a
patch is 0.13 s and the 0.1 s file is too short). Processes are real subprocesses where the
process matters (signals, exit codes, tracebacks); a few use a wrapper that patches one function
to inject the fault and then runs ``train.main`` exactly as ``python train.py`` does.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from common_definitions import Config
from utils.data.demo_data import make_demo_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 8000
TINY_FLAGS = ["--sampling_rate", str(RATE), "--n_fft", "62", "--hop_length", "32",
              "--window_size", "32", "--k_glow", "2", "--l_glow", "2", "--hidden_channels", "8",
              "--batch_size", "8", "--griffin_lim_iters", "2", "--warmup_steps", "2",
              "--log_every", "5", "--no_progress"]
TINY = Config(sampling_rate=RATE, n_fft=62, hop_length=32, window_size=32, k_glow=2, l_glow=2,
              hidden_channels=8, batch_size=8, griffin_lim_iters=2, warmup_steps=2, log_every=5)
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
SKIPPED_KEY = "skipped_steps/.ATTRIBUTES/VARIABLE_VALUE"


# ---------------------------------------------------------------------------------- helpers
def environment():
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def run_script(script, args, timeout=300):
    """``python script *args`` from the repository root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=timeout)


def start_script(script, args, folder, name, extra_env=None):
    """Start ``python script *args`` with stdout and stderr going to files (no pipe to fill)."""
    out = open(os.path.join(folder, f"{name}.out"), "w")
    err = open(os.path.join(folder, f"{name}.err"), "w")
    process = subprocess.Popen([sys.executable, script, *map(str, args)], cwd=ROOT,
                               env={**environment(), **(extra_env or {})}, stdout=out, stderr=err,
                               text=True)
    process.files = (out, err)
    return process


def finish(process, timeout=300):
    """Wait for a started process; returns ``(returncode, stdout, stderr)``."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    texts = []
    for handle in process.files:
        handle.close()
        with open(handle.name, encoding="utf-8") as read:
            texts.append(read.read())
    return process.returncode, texts[0], texts[1]


def wait_until(condition, process, timeout=240):
    """Poll ``condition`` every few milliseconds while ``process`` runs; True once it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.003)
    return False


def assert_one_line_error(returncode, stderr, prog="train.py", *fragments):
    """Non-zero exit, no traceback, one ``prog: error:`` line (the last one) naming fragments."""
    assert returncode not in (0, None), stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def recorded_steps(checkpoint_dir):
    """Steps of the checkpoints that the CheckpointManager's ``checkpoint`` index file names.

    This file is what a restart reads (tf.train.latest_checkpoint); TensorFlow replaces it
    atomically, and only after a checkpoint's own files are complete.
    """
    try:
        with open(os.path.join(checkpoint_dir, "checkpoint"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return []
    return sorted({int(n) for n in re.findall(r'all_model_checkpoint_paths: ".*?ckpt-(\d+)"', text)})


def checkpoint_files(checkpoint_dir):
    """step -> names of the ``ckpt-N`` files and folders on disk."""
    found = {}
    for name in os.listdir(checkpoint_dir):
        match = re.match(r"ckpt-(\d+)(\.|_)", name)
        if match:
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def assert_checkpoint_is_whole(path, step):
    """``path`` restores: its step counter is ``step`` and every saved float is finite."""
    reader = tf.train.load_checkpoint(path)
    assert reader.get_tensor(STEP_KEY) == step
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating:
            assert np.isfinite(reader.get_tensor(name)).all(), (path, name)


def assert_only_whole_checkpoints(checkpoint_dir):
    """Every checkpoint file on disk belongs to a recorded, restorable checkpoint."""
    recorded = recorded_steps(checkpoint_dir)
    on_disk = checkpoint_files(checkpoint_dir)
    assert recorded and set(on_disk) == set(recorded), (recorded, on_disk)
    for step, names in on_disk.items():
        assert sorted(names) == [f"ckpt-{step}.data-00000-of-00001", f"ckpt-{step}.index"], names
        assert_checkpoint_is_whole(os.path.join(checkpoint_dir, f"ckpt-{step}"), step)
    assert tf.train.latest_checkpoint(checkpoint_dir).endswith(f"ckpt-{recorded[-1]}")


def scalars(logdir, tag):
    """step -> value of a TensorBoard scalar over every event file in ``logdir``."""
    values = {}
    for name in sorted(os.listdir(logdir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def output_flags(folder, records=True):
    """Every output folder of train.py under ``folder`` (``--records_dir`` only if ``records``)."""
    folder = str(folder)
    flags = ["--checkpoint_dir", os.path.join(folder, "ck"), "--logdir", os.path.join(folder, "logs"),
             "--output_dir", os.path.join(folder, "out")]
    return flags + (["--records_dir", os.path.join(folder, "rec")] if records else [])


def snapshot(folder):
    """name -> (size, mtime_ns) of every file under ``folder``."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            info = os.stat(path)
            found[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns)
    return found


# ---------------------------------------------------------------------------------- the corpus
def _song(seconds, seed, rate=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = 196.0 * 2 ** (rng.integers(0, 12) / 12)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))) / rate
    song = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.003 * rng.standard_normal(len(t))
    return song.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two folders never seen before: demo songs mixed with every kind of bad file.

    Returns the folders, the absolute paths of the valid files, the bad files with a fragment of
    their expected reason, and the hidden files (ignored: neither used nor reported).
    """
    root = str(tmp_path_factory.mktemp("mixed"))
    make_demo_corpus(root=root, songs_per_singer=2, song_seconds=3.0)
    virtual, real = os.path.join(root, "virtual"), os.path.join(root, "real")

    def path(*parts):
        full = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    valid = [os.path.join(folder, f"song_0{i}.wav") for folder in (virtual, real) for i in range(2)]
    song = _song(3.0, seed=1)
    extra = {
        ("virtual", "clipped.wav"): dict(data=np.clip(6 * song, -1, 1), subtype="PCM_16"),
        ("virtual", "UPPER CASE.WAV"): dict(data=_song(2.0, seed=2), subtype="PCM_16"),
        ("virtual", "chanson é ü 歌.wav"): dict(data=_song(2.5, seed=3), subtype="PCM_16"),
        ("virtual", "nested", "deeper", "inner.wav"): dict(data=_song(2.0, seed=4), subtype="PCM_16"),
        ("virtual", "stereo 8-bit.wav"): dict(
            data=np.stack([_song(2.0, 5, 22050), _song(2.0, 6, 22050)], axis=1), subtype="PCM_U8",
            samplerate=22050),
    }
    for parts, spec in extra.items():
        sf.write(path(*parts), spec["data"], spec.get("samplerate", 16000), subtype=spec["subtype"])
        valid.append(path(*parts))

    bad = {
        path("virtual", "empty.wav"): "empty file (0 bytes)",
        path("virtual", "truncated.wav"): "truncated",
        path("virtual", "lyrics.mp3"): "cannot decode",
        path("virtual", "blip.wav"): "shorter than one patch (0.10 s < 0.13 s)",
        path("virtual", "silence.wav"): "silent",
        path("virtual", "nan middle.wav"): "non-finite samples at 1.50 s",
        path("real", "broken.mp3"): "cannot decode",
    }
    open(path("virtual", "empty.wav"), "wb").close()
    sf.write(path("virtual", "truncated.wav"), song, 16000, subtype="PCM_16")
    with open(path("virtual", "truncated.wav"), "r+b") as handle:
        handle.truncate(30000)
    for name in (("virtual", "lyrics.mp3"), ("real", "broken.mp3")):
        with open(path(*name), "w", encoding="utf-8") as handle:
            handle.write("la la la, not audio\n" * 200)
    sf.write(path("virtual", "blip.wav"), song[:1600], 16000, subtype="PCM_16")
    sf.write(path("virtual", "silence.wav"), np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    poisoned = song.copy()
    poisoned[len(song) // 2] = np.nan  # float32 wav with a NaN in the middle
    sf.write(path("virtual", "nan middle.wav"), poisoned, 16000, subtype="FLOAT")

    hidden = [path("virtual", ".hidden.wav"), path("virtual", ".cache", "song.wav")]
    for name in hidden:
        sf.write(name, song, 16000, subtype="PCM_16")
    with open(path("real", "notes.txt"), "w", encoding="utf-8") as handle:
        handle.write("not a song")
    return types.SimpleNamespace(root=root, virtual=virtual, real=real, valid=sorted(valid),
                                 bad=bad, hidden=hidden)


def read_manifest(records_dir):
    with open(os.path.join(records_dir, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)["files"]


def assert_records_hold_exactly_the_valid_files(records_dir, corpus):
    from data_loader import SongDataLoader

    files = read_manifest(records_dir)
    used = sorted(p for p, entry in files.items() if entry["status"] == "ok")
    assert used == corpus.valid
    skipped = {p: entry["reason"] for p, entry in files.items() if entry["status"] != "ok"}
    assert set(skipped) == set(corpus.bad)
    for path, fragment in corpus.bad.items():
        assert fragment in skipped[path], (path, skipped[path])
    assert not set(corpus.hidden) & set(files)
    songs = SongDataLoader(TINY.replace(records_dir=records_dir)).records().songs()
    assert sorted(song.path for song in songs) == corpus.valid


@pytest.fixture(scope="module")
def records(corpus, tmp_path_factory):
    """The data_loader CLI run on the mixed folders."""
    folder = str(tmp_path_factory.mktemp("records"))
    result = run_script("data_loader.py", [
        corpus.virtual, corpus.real, "--out", folder, "--sampling_rate", RATE, "--n_fft", 62,
        "--hop_length", 32, "--window_size", 32])
    return types.SimpleNamespace(dir=folder, result=result)


def test_data_loader_cli_uses_every_valid_file_and_names_every_bad_one(corpus, records):
    result = records.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert_records_hold_exactly_the_valid_files(records.dir, corpus)
    lines = result.stdout.splitlines()
    for path, fragment in corpus.bad.items():  # one line per skipped file: its path and reason
        named = [line for line in lines if line.startswith(f"skipped: {path}: ")]
        assert len(named) == 1 and fragment in named[0], (path, lines)
    assert sum(line.startswith("skipped: ") for line in lines) == len(corpus.bad)
    assert lines[-1].startswith(f"written: {len(corpus.valid)} files (")
    assert lines[-1].endswith(f"skipped: {len(corpus.bad)} files")


# ---------------------------------------------------------------------------------- SIGKILL, resume
@pytest.fixture(scope="module")
def killed_run(corpus, tmp_path_factory):
    """train.py on the mixed folders (checkpoint every 5 steps), SIGKILLed once the index file
    names its first two checkpoints, then rerun with the same command: 2 epochs x 20 steps."""
    folder = tmp_path_factory.mktemp("killed")
    checkpoint_dir = str(folder / "ck")
    command = ["--data_dir", corpus.virtual, "--data_dir", corpus.real, *TINY_FLAGS,
               "--epochs", "2", "--steps_per_epoch", "20", "--checkpoint_every", "5",
               *output_flags(folder)]
    process = start_script("train.py", command, str(folder), "first")
    reached = wait_until(lambda: len(recorded_steps(checkpoint_dir)) >= 2, process)
    process.send_signal(signal.SIGKILL)
    first = finish(process)
    assert reached, first
    at_kill = recorded_steps(checkpoint_dir)
    latest_at_kill = tf.train.latest_checkpoint(checkpoint_dir)
    # What a restart would restore, checked before the rerun rotates it away.
    assert latest_at_kill and at_kill, first
    assert_checkpoint_is_whole(latest_at_kill, at_kill[-1])
    second = run_script("train.py", command)
    return types.SimpleNamespace(folder=folder, command=command, checkpoint_dir=checkpoint_dir,
                                 first=first, at_kill=at_kill, latest_at_kill=latest_at_kill,
                                 second=second)


def test_sigkill_mid_epoch_then_the_same_command_resumes_to_step_40(killed_run, corpus):
    run = killed_run
    returncode, stdout, _ = run.first
    assert returncode == -signal.SIGKILL  # killed, not finished
    assert "done at step" not in stdout
    # The restart picks the latest *recorded* checkpoint; checkpoints were written every 5
    # steps, so the kill lost at most the 5 steps since the last one.
    last = run.at_kill[-1]
    assert 10 <= last < 40 and run.latest_at_kill.endswith(f"ckpt-{last}")
    assert run.at_kill == list(range(last - 5 * (len(run.at_kill) - 1), last + 1, 5))

    second = run.second
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    assert f"resumed from {run.latest_at_kill} at step {last}" in second.stdout
    assert f"steps {last} -> 40" in second.stdout  # the step counter continues
    assert "done at step 40" in second.stdout
    assert recorded_steps(run.checkpoint_dir)[-1] == 40
    assert_only_whole_checkpoints(run.checkpoint_dir)  # nothing half-written left behind
    # The records train.py made itself hold exactly the valid files too.
    assert_records_hold_exactly_the_valid_files(str(run.folder / "rec"), corpus)
    for path in corpus.bad:
        assert f"skipped: {path}: " in second.stdout


def test_another_model_or_a_folder_under_a_file_is_refused_after_the_run(killed_run, tmp_path):
    run = killed_run
    before = snapshot(str(run.folder))
    refused = run_script("train.py", run.command + ["--k_glow", "3"])
    assert_one_line_error(refused.returncode, refused.stderr, "train.py", "k_glow=2 (now 3)",
                          run.checkpoint_dir)
    assert refused.returncode == 2
    assert snapshot(str(run.folder)) == before  # no record, checkpoint or event file touched

    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    command = list(run.command)
    command[command.index("--checkpoint_dir") + 1] = str(blocker / "ck")
    refused = run_script("train.py", command)
    assert_one_line_error(refused.returncode, refused.stderr, "train.py", "--checkpoint_dir")
    assert refused.returncode == 2
    assert snapshot(str(run.folder)) == before


def test_migrate_cli_works_on_a_valid_file_of_the_mixed_folder(killed_run, corpus, tmp_path):
    from utils.audio.signal import load_audio

    source = os.path.join(corpus.virtual, "stereo 8-bit.wav")
    output = tmp_path / "migrated é.wav"
    result = run_script("migrate.py", [
        "--checkpoint_dir", killed_run.checkpoint_dir, "--source", source,
        "--reference", corpus.real, "--method", "match", "--strength", "1", "--output", output])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # The broken file of the reference folder is skipped with its reason, not fatal.
    assert re.search(r"migrate\.py: warning: reference: skipping .*broken\.mp3: cannot decode",
                     result.stderr), result.stderr
    migrated = load_audio(str(output), RATE)
    assert migrated.shape == load_audio(source, RATE).shape
    assert np.isfinite(migrated).all() and np.abs(migrated).max() > 0.01
    assert (tmp_path / "migrated é.png").is_file()


def test_migrate_refuses_each_bad_file_of_the_mixed_folder_on_one_line(killed_run, corpus,
                                                                       tmp_path, capsys):
    """The bad files as sources (in process: the same main() as the CLI). The 0.1 s file is
    shorter than one patch, which inference accepts: it is padded and cut back, with a warning."""
    import migrate

    def run(source, output):
        status = migrate.main(["--checkpoint_dir", killed_run.checkpoint_dir, "--source", source,
                               "--reference", corpus.real, "--method", "midpoint",
                               "--output", str(output)])
        return status, capsys.readouterr().err

    for path, fragment in corpus.bad.items():
        if "shorter than one patch" in fragment:
            continue
        status, err = run(path, tmp_path / "never.wav")
        assert_one_line_error(status, err, "migrate.py", os.path.basename(path),
                              fragment.split(" at ")[0])
    assert not os.path.exists(tmp_path / "never.wav")

    from utils.audio.signal import load_audio

    blip = os.path.join(corpus.virtual, "blip.wav")
    status, err = run(blip, tmp_path / "blip.wav")
    assert status == 0, err
    assert "migrate.py: warning:" in err and "shorter than one patch" in err
    assert load_audio(str(tmp_path / "blip.wav"), RATE).shape == load_audio(blip, RATE).shape


# ---------------------------------------------------------------------------------- killed in a save
KILL_IN_SAVE = """
import os, signal, sys
import train
import tensorflow as tf

kill_at = int(sys.argv[1])
original = tf.train.CheckpointManager.save


def save(self, checkpoint_number=None, check_interval=True, options=None):
    if checkpoint_number == kill_at:
        # Write callbacks run once the checkpoint's files are complete, before the manager's
        # own callback records it in the index file: the process dies in between.
        def die(save_path):
            os.kill(os.getpid(), signal.SIGKILL)

        options = tf.train.CheckpointOptions(experimental_write_callbacks=[die])
    return original(self, checkpoint_number=checkpoint_number, check_interval=check_interval,
                    options=options)


tf.train.CheckpointManager.save = save
sys.exit(train.main(sys.argv[2:]))
"""


def test_a_kill_inside_a_checkpoint_save_never_leaves_a_half_written_one_picked(records, tmp_path):
    from pipeline import Trainer

    script = tmp_path / "kill_in_save.py"
    script.write_text(textwrap.dedent(KILL_IN_SAVE))
    command = [*TINY_FLAGS, "--records_dir", records.dir, "--epochs", "1", "--steps_per_epoch",
               "20", "--checkpoint_every", "5", *output_flags(tmp_path, records=False)]
    killed = run_script(script, ["15", *command])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoint_dir = str(tmp_path / "ck")
    # ckpt-15's files were written, but the index still names ckpt-10 as the latest.
    assert recorded_steps(checkpoint_dir) == [5, 10]
    assert 15 in checkpoint_files(checkpoint_dir)
    assert tf.train.latest_checkpoint(checkpoint_dir).endswith("ckpt-10")
    # Make the unrecorded one half-written, as a kill a moment earlier would have left it.
    data = os.path.join(checkpoint_dir, "ckpt-15.data-00000-of-00001")
    with open(data, "r+b") as handle:
        handle.truncate(os.path.getsize(data) // 2)

    messages = []
    config = Config.load(os.path.join(checkpoint_dir, "config.json"))
    result = Trainer(config, log=messages.append, progress=False).fit()
    # The killed process had reached step 15: one checkpoint interval (5 steps) is redone.
    assert f"resumed from {os.path.join(checkpoint_dir, 'ckpt-10')} at step 10" in messages
    assert result.step == 20 and not result.interrupted
    assert recorded_steps(checkpoint_dir) == [10, 15, 20]
    assert_only_whole_checkpoints(checkpoint_dir)  # ckpt-15 rewritten whole


# ------------------------------------------------------------------------ SIGINT and SIGTERM
@pytest.mark.parametrize("signum,word", [(signal.SIGINT, "interrupted"),
                                         (signal.SIGTERM, "terminated")], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_saves_the_step_it_reached_and_exits_128_plus_signal(records, tmp_path,
                                                                         signum, word):
    checkpoint_dir = str(tmp_path / "ck")
    command = [*TINY_FLAGS, "--records_dir", records.dir, "--epochs", "1000",
               "--steps_per_epoch", "20", "--checkpoint_every", "5",
               *output_flags(tmp_path, records=False)]
    process = start_script("train.py", command, str(tmp_path), "train")
    reached = wait_until(lambda: 5 in recorded_steps(checkpoint_dir), process)
    process.send_signal(signum)
    returncode, stdout, stderr = finish(process)
    assert reached, stderr[-3000:]
    assert returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr
    match = re.search(word + r" at step (\d+); checkpoint saved: (\S+)", stdout)
    assert match, stdout
    step, path = int(match.group(1)), match.group(2)
    assert 5 <= step < 20000 and path == os.path.join(checkpoint_dir, f"ckpt-{step}")
    assert recorded_steps(checkpoint_dir)[-1] == step
    assert_checkpoint_is_whole(path, step)  # the saved step is the step reached
    assert_only_whole_checkpoints(checkpoint_dir)


def test_sigterm_to_one_worker_stops_every_worker_at_the_same_saved_step(records, tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    checkpoint_dir = str(tmp_path / "ck")
    command = [*TINY_FLAGS, "--records_dir", records.dir, "--epochs", "1000",
               "--steps_per_epoch", "20", "--checkpoint_every", "5",
               *output_flags(tmp_path, records=False)]
    workers = [start_script("train.py", command, str(tmp_path), f"worker{index}", {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index in range(2)]
    try:
        reached = wait_until(lambda: 5 in recorded_steps(checkpoint_dir), workers[0])
        workers[1].send_signal(signal.SIGTERM)  # only the non-chief worker is told to stop
        results = [finish(worker) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert reached, results[0][2][-3000:] if results else ""
    for returncode, _, stderr in results:
        assert returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert "Traceback" not in stderr
    match = re.search(r"terminated at step (\d+); checkpoint saved: (\S+)", results[0][1])
    assert match, results[0][1]
    step = int(match.group(1))
    assert recorded_steps(checkpoint_dir)[-1] == step
    assert_checkpoint_is_whole(match.group(2), step)


def test_ctrl_c_while_starting_up_exits_130_without_a_traceback(corpus, tmp_path):
    process = start_script("train.py", ["--data_dir", corpus.real, *TINY_FLAGS,
                                        *output_flags(tmp_path)], str(tmp_path), "train")
    time.sleep(1.0)  # TensorFlow is still loading
    process.send_signal(signal.SIGINT)
    returncode, _, stderr = finish(process)
    assert returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "train.py: interrupted" in stderr


# ---------------------------------------------------------------------------------- NaN / Inf
POISON = """
import sys
import train
import numpy as np
import tensorflow as tf
import pipeline

# One value of the batch of step 3 becomes NaN, of step 7 +Inf, and of every step from 12 on NaN.
original = pipeline.Trainer.training_dataset


def poisoned(self, start_step=0):
    def poison(step, x):
        bad = tf.equal(step, 3) | tf.equal(step, 7) | (step >= 12)
        value = tf.where(tf.equal(step, 7), np.float32(np.inf), np.float32(np.nan))
        hit = tf.tensor_scatter_nd_update(x, [[0, 5, 5, 0]], tf.reshape(value, [1]))
        return tf.where(bad, hit, x)

    return original(self, start_step).enumerate(start_step).map(poison)


pipeline.Trainer.training_dataset = poisoned
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def poisoned_run(records, tmp_path_factory):
    folder = tmp_path_factory.mktemp("poisoned")
    script = folder / "poison.py"
    script.write_text(textwrap.dedent(POISON))
    command = [*TINY_FLAGS, "--records_dir", records.dir, "--epochs", "1", "--steps_per_epoch",
               "40", "--checkpoint_every", "5", "--max_nonfinite_steps", "4",
               *output_flags(folder, records=False)]
    result = run_script(script, command)
    return types.SimpleNamespace(folder=folder, result=result, checkpoint_dir=str(folder / "ck"))


def test_isolated_nan_and_inf_batches_are_skipped_counted_and_never_reach_the_weights(poisoned_run):
    stdout = poisoned_run.result.stdout
    assert "step 5: skipped 1 non-finite step(s) (NaN/Inf loss or gradient; 1 in all)" in stdout
    assert "step 10: skipped 1 non-finite step(s) (NaN/Inf loss or gradient; 2 in all)" in stdout
    # TensorBoard counts them (every log_every = 5 steps, and at the stop).
    assert scalars(str(poisoned_run.folder / "logs"), "skipped_steps") == {
        5: 1.0, 10: 2.0, 15: 5.0, 16: 6.0}
    bits = scalars(str(poisoned_run.folder / "logs"), "bits_per_dim")
    assert set(bits) == {5, 10, 15} and all(np.isfinite(list(bits.values())))
    # Checkpoints after skipped steps hold finite weights and Adam moments, and the count.
    for step, skipped in ((5, 1), (10, 2), (15, 5)):
        path = os.path.join(poisoned_run.checkpoint_dir, f"ckpt-{step}")
        assert_checkpoint_is_whole(path, step)
        assert tf.train.load_variable(path, SKIPPED_KEY) == skipped


def test_a_run_of_non_finite_steps_stops_with_one_line_and_the_last_checkpoint_intact(
        poisoned_run, records):
    from data_loader import SongDataLoader
    from utils.runs.run_folder import load_for_inference

    result = poisoned_run.result
    line = assert_one_line_error(result.returncode, result.stderr, "train.py",
                                 "training stopped at step 16: 4 consecutive non-finite steps",
                                 os.path.join(poisoned_run.checkpoint_dir, "ckpt-15"))
    assert result.returncode == 1 and "is intact" in line
    assert recorded_steps(poisoned_run.checkpoint_dir)[-1] == 15  # nothing saved after them
    codec = load_for_inference(poisoned_run.checkpoint_dir)
    model, config, stats = codec.model, codec.config, codec.stats
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)
    batch = next(iter(SongDataLoader(config.replace(records_dir=records.dir)).records()
                      .training_dataset(seed=1)))
    z, logdet = model.encode(batch)
    assert np.isfinite(z.numpy()).all() and np.isfinite(logdet.numpy()).all()


# ---------------------------------------------------------------------------------- refusals
# tests/test_train_cli.py covers a missing data folder, zero or malformed numbers, unknown flags,
# and checkpoint and log folders under a file; these are the cases it does not.
@pytest.mark.parametrize("case", [
    "infinite_learning_rate", "nan_temperature", "negative_seed", "hop_not_below_n_fft",
    "records_dir_under_a_file", "output_dir_under_a_file",
])
def test_refused_before_any_work_with_nothing_created(case, corpus, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    outputs = {flag: value for flag, value in zip(*[iter(output_flags(tmp_path / "run"))] * 2)}
    extra, fragments = {
        "infinite_learning_rate": (["--learning_rate", "inf"], ["--learning_rate", "finite"]),
        "nan_temperature": (["--temperature", "nan"], ["--temperature", "finite"]),
        "negative_seed": (["--seed", "-1"], ["--seed"]),
        "hop_not_below_n_fft": (["--hop_length", "62"], ["hop_length (62) must be below n_fft"]),
        "records_dir_under_a_file": (["--records_dir", str(blocker / "rec")], ["--records_dir"]),
        "output_dir_under_a_file": (["--output_dir", str(blocker / "out")], ["--output_dir"]),
    }[case]
    argv = ["--data_dir", corpus.virtual, *TINY_FLAGS]
    for flag, value in outputs.items():
        if flag not in extra:
            argv += [flag, value]
    result = run_script("train.py", argv + extra, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "train.py", *fragments)
    assert result.returncode == 2
    assert not os.path.exists(tmp_path / "run")  # no records, checkpoint, logs or folders
    assert sorted(os.listdir(tmp_path)) == ["a file"]


# ---------------------------------------------------------------------------------- long songs
MEMORY = """
import json, sys, time
import numpy as np
from utils.migration.latent_moves import Midpoint
from utils.runs.run_folder import load_for_inference


def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024


codec = load_for_inference(sys.argv[1])
model, config, stats = codec.model, codec.config, codec.stats
reference = codec.folder_latent_stats(sys.argv[2])
rate = config.sampling_rate
t = np.arange(10 * rate) / rate
phrase = (0.3 * np.sin(2 * np.pi * np.cumsum(220 + 30 * np.sin(2 * np.pi * 0.3 * t)) / rate)
          ).astype(np.float32)
options = dict(chunk_steps=256, batch_size=16)
Midpoint(codec, reference).transform(phrase, 1.0, **options)
report = []
for minutes in (1, 30):
    song = np.resize(phrase, minutes * 60 * rate)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM, the peak resident set size
    began = time.perf_counter()
    out = Midpoint(codec, reference).transform(song, 1.0, **options).samples
    report.append({"minutes": minutes, "growth": status("VmHWM") - before,
                   "seconds": time.perf_counter() - began, "song_bytes": song.nbytes,
                   "length_ok": out.shape == song.shape, "finite": bool(np.isfinite(out).all()),
                   "rms": float(np.sqrt(np.mean(out.astype(np.float64) ** 2)))})
    del out, song
print(json.dumps(report))
"""


def test_a_30_minute_song_migrates_with_the_memory_of_a_1_minute_one(killed_run, corpus, tmp_path):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    script = tmp_path / "memory.py"
    script.write_text(textwrap.dedent(MEMORY))
    result = run_script(script, [killed_run.checkpoint_dir, corpus.real])
    assert result.returncode == 0, result.stderr[-3000:]
    one, thirty = json.loads(result.stdout.strip().splitlines()[-1])
    for report in (one, thirty):
        assert report["length_ok"] and report["finite"] and report["rms"] > 0.01, report
    # Beyond its input (allocated before measuring) the long song needs its output array
    # (song_bytes) and the same per-segment working memory as the short one. A whole-song
    # spectrogram, phase and STFT would add several song_bytes.
    extra = thirty["growth"] - one["growth"]
    assert extra < 1.5 * thirty["song_bytes"], (one, thirty)
    print(f"peak RSS growth: 1 min {one['growth'] / 2**20:.0f} MiB, 30 min "
          f"{thirty['growth'] / 2**20:.0f} MiB ({thirty['seconds']:.1f} s)")


# ---------------------------------------------------------------------------------- determinism
def test_the_same_seed_and_data_give_the_same_first_loss(records, tmp_path):
    from pipeline import Trainer

    losses, weights = [], []
    for name in ("a", "b"):
        folder = tmp_path / name
        config = TINY.replace(records_dir=records.dir, epochs=1, steps_per_epoch=1, log_every=1,
                              seed=7, checkpoint_dir=str(folder / "ck"),
                              logdir=str(folder / "logs"), output_dir=str(folder / "out"))
        messages = []
        trainer = Trainer(config, log=messages.append, progress=False)
        result = trainer.fit()
        first = [m for m in messages if m.startswith("epoch 1/1 (step 1): nll ")]
        assert len(first) == 1
        losses.append((result.history[0]["bits_per_dim"], result.history[0]["nll"],
                       first[0].split(", ")[0:2]))
        weights.append([v.numpy() for v in trainer.model.variables])
    assert losses[0] == losses[1]
    assert np.isfinite(losses[0][0])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
