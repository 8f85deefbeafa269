"""Fault injection on the data side (Reliability II): damaged records, special files, outputs
inside data folders, two writers on one records folder, Ctrl-C while making records.

Every fault is real: shards are truncated, garbled, extended, deleted or replaced by a FIFO on
disk; FIFOs, sockets and a device link sit in a data folder; a second ``data_loader.py`` process
meets the first one's lock; SIGINT reaches a real ``data_loader.py`` mid-make. Only what root
cannot produce (an unreadable folder or file: chmod does not stop root) is simulated by making
the one OS call fail. A small wrapper (``SLOW``) slows or holds ``load_audio`` so that a
process is caught mid-make at a known point, then runs ``data_loader.main`` as the CLI does.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import types
import warnings

import numpy as np
import pytest
import soundfile as sf

import data_loader
from common_definitions import Config
from data_loader import DataError, SongDataLoader
from utils.data import records_writer
from utils.errors import RefusedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 8000
# Patches of 0.13 s; three 1-second songs fill one shard, so each singer has a shard of its own.
CONFIG = Config(sampling_rate=RATE, n_fft=62, hop_length=32, window_size=32, k_glow=2, l_glow=2,
                hidden_channels=8, batch_size=4, shuffle_buffer=16, shard_size_seconds=3.0,
                validation_split=0.0)
FLAGS = ["--sampling_rate", str(RATE), "--n_fft", "62", "--hop_length", "32",
         "--window_size", "32"]


# ---------------------------------------------------------------------------------- helpers
def song(seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 196.0 * 2 ** (rng.integers(0, 12) / 12)
    x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)
    return (x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def write_song(path, samples, rate):
    """Write a song, making its folder first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, samples, rate)


def make_corpus(root, per_singer=3, seconds=1.0):
    """``real/`` and ``virtual/`` folders of ``per_singer`` songs each; their folders and the
    samples written, by path."""
    samples = {}
    for i, singer in enumerate(("real", "virtual")):
        for j in range(per_singer):
            path = os.path.join(str(root), singer, f"{singer}_{j}.wav")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            samples[path] = song(seconds, 10 * i + j)
            sf.write(path, samples[path], RATE, subtype="FLOAT")
    folders = (os.path.join(str(root), "real"), os.path.join(str(root), "virtual"))
    return types.SimpleNamespace(root=str(root), dirs=folders, samples=samples)


def make(corpus, records, config=CONFIG, **kwargs):
    """``SongDataLoader.make`` quietly; returns ``(summary, warning lines, log lines)``."""
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = SongDataLoader(config).make(corpus.dirs, records, log=lines.append, **kwargs)
    return summary, [str(w.message) for w in caught], lines


def open_records(records, config=CONFIG):
    """``Records`` and the warning lines opening them gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = SongDataLoader(config).records(records)
    return opened, [str(w.message) for w in caught]


def manifest(records):
    with open(os.path.join(records, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def shard_of(records, singer):
    """The shard holding the songs of ``singer`` (all of them: one shard each here)."""
    files = manifest(records)["files"]
    shards = {e["shard"] for p, e in files.items() if e["label"] == singer and e["status"] == "ok"}
    assert len(shards) == 1, shards
    return os.path.join(records, shards.pop())


def listing(folder):
    return sorted(os.listdir(folder))


def env():
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


# A data_loader.py whose load_audio notes each file it starts in $MARKER, and holds from the
# $HOLD_AT-th file on until $GO exists (or for ever, i.e. until a signal). Shards of 3 s.
SLOW = """
import os, sys, time
import data_loader
from utils.data import records_writer

marker, hold_at, go = os.environ["MARKER"], int(os.environ["HOLD_AT"]), os.environ["GO"]
real_load, started = records_writer.load_audio, []

def load(path, rate):
    started.append(path)
    with open(marker, "a") as handle:
        handle.write(path + "\\n")
    if len(started) >= hold_at:
        deadline = time.monotonic() + 120
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
    return real_load(path, rate)

def prepare(args, real_prepare=data_loader._prepare):
    config, files = real_prepare(args)
    return config.replace(shard_size_seconds=3.0), files

records_writer.load_audio = load
data_loader._prepare = prepare
sys.exit(data_loader.main(sys.argv[1:]))
"""


def start_slow(folder, args, hold_at, name="slow"):
    script = os.path.join(str(folder), "slow_data_loader.py")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(SLOW)
    files = types.SimpleNamespace(marker=os.path.join(str(folder), f"{name}.marker"),
                                  go=os.path.join(str(folder), f"{name}.go"),
                                  out=os.path.join(str(folder), f"{name}.out"),
                                  err=os.path.join(str(folder), f"{name}.err"))
    with open(files.out, "w") as out, open(files.err, "w") as err:
        process = subprocess.Popen(
            [sys.executable, script, *args], cwd=ROOT, stdout=out, stderr=err, text=True,
            env=dict(env(), MARKER=files.marker, HOLD_AT=str(hold_at), GO=files.go))
    process.files = files
    return process


def started(process, count, timeout=120):
    """Wait until the slow loader has started ``count`` files; False if it ended first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(process.files.marker) as handle:
                if len(handle.read().splitlines()) >= count:
                    return True
        except FileNotFoundError:
            pass
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def finish(process, timeout=120):
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with open(process.files.out) as out, open(process.files.err) as err:
        return process.returncode, out.read(), err.read()


def assert_whole(records, corpus, config=CONFIG):
    """The records open without a warning and hold exactly the corpus's songs, sample for
    sample."""
    opened, lines = open_records(records, config)
    assert lines == [] and opened.damaged == {}
    songs = {s.path: s.samples for s in opened.songs()}
    assert sorted(songs) == sorted(corpus.samples)
    for path, samples in corpus.samples.items():
        np.testing.assert_allclose(songs[path], samples, atol=1e-6)
    return opened


# ---------------------------------------------------------------------------------- damaged shards
def truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def garble(path):  # same size, bytes changed in the middle of a song's samples
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        block = handle.read(64)
        handle.seek(-len(block), 1)
        handle.write(bytes(b ^ 0x5A for b in block))


def extend(path):
    with open(path, "ab") as handle:
        handle.write(b"\0" * 100)


def replace_by_fifo(path):
    os.remove(path)
    os.mkfifo(path)


DAMAGE = {"truncated": (truncate, "(truncated: "), "garbled": (garble, "(checksum mismatch: "),
          "extended": (extend, " bytes, "), "deleted": (os.remove, "(missing)"),
          "a FIFO": (replace_by_fifo, "(not a regular file)")}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_shard_is_named_left_out_and_rebuilt_by_the_next_make(damage, tmp_path):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    assert make(corpus, records)[0].written == 6
    shard = shard_of(records, "real")
    hurt, reason = DAMAGE[damage]
    hurt(shard)

    # Reading: one warning line naming the shard and what it loses; the rest is served.
    opened, lines = open_records(records)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"{shard} is damaged (") and reason in lines[0]
    assert "left out with its 3 songs of real (real_0.wav, real_1.wav, real_2.wav)" in lines[0]
    assert "data_loader.py" in lines[0]  # what to do
    assert set(opened.damaged) == {os.path.basename(shard)} and opened.labels == ("virtual",)
    assert sorted(s.path for s in opened.songs()) == sorted(
        p for p in corpus.samples if "/virtual/" in p)
    assert opened.stats().count > 0
    batch = next(iter(opened.training_dataset(seed=1)))
    assert tuple(batch.shape) == (CONFIG.batch_size,) + CONFIG.input_shape

    # Making again rebuilds it from the audio: only its songs are decoded.
    summary, lines, log = make(corpus, records)
    assert len(lines) == 1 and lines[0].startswith(f"{shard} is damaged ("), lines
    assert reason in lines[0] and lines[0].endswith(
        "): decoding its 3 songs of real (real_0.wav, real_1.wav, real_2.wav) again from their "
        "audio files")
    assert (summary.written, summary.decoded) == (6, 3) and log[-1] == summary.line()
    assert_whole(records, corpus)
    assert ".lock" not in os.listdir(records)


def test_every_shard_damaged_is_a_one_line_data_error_and_the_cli_rebuilds(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    make(corpus, records)
    for singer in ("real", "virtual"):
        truncate(shard_of(records, singer))
    with pytest.raises(DataError) as error:
        open_records(records)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"every shard in {records} is damaged (2;")
    assert f"data_loader.py AUDIO_DIR --out {records}" in message

    # The CLI rerun rebuilds both (it used to report "written: 6" and keep the damaged shards).
    capsys.readouterr()
    assert data_loader.main([*corpus.dirs, "--out", records, *FLAGS]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith("written: 6 files (")
    warned = [line for line in err.splitlines() if line.startswith("data_loader.py: warning:")]
    assert len(warned) == 2 and all("is damaged (truncated: " in line for line in warned)
    assert_whole(records, corpus)


def test_a_damaged_shard_whose_audio_is_gone_drops_only_those_songs(tmp_path):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    make(corpus, records)
    shard = shard_of(records, "real")
    garble(shard)
    gone = os.path.join(corpus.dirs[0], "real_1.wav")
    os.remove(gone)
    del corpus.samples[gone]
    summary, lines, _ = make(corpus, records)
    assert len(lines) == 1 and lines[0].startswith(f"{shard} is damaged (checksum mismatch")
    assert "decoding its 2 songs of real (real_0.wav, real_2.wav) again" in lines[0]
    assert "its 1 song of real (real_1.wav) are no longer among the audio files" in lines[0]
    assert (summary.written, summary.decoded) == (5, 2)
    assert_whole(records, corpus)


def test_an_old_manifest_without_shard_records_is_verified_by_reading_then_upgraded(tmp_path):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    make(corpus, records)
    old = manifest(records)
    assert set(old["shards"]) == {os.path.basename(shard_of(records, s))
                                  for s in ("real", "virtual")}
    for name, record in old["shards"].items():
        assert record["size"] == os.path.getsize(os.path.join(records, name))
        assert record["records"] == 3 and len(record["crc32"]) == 8
    del old["shards"]  # what records made before the field look like
    with open(os.path.join(records, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(old, handle)
    assert_whole(records, corpus)  # intact: no warning, every song

    # A legacy shard cut at a record boundary (TensorFlow reads such a file without an error)
    # and one cut inside a record are both found by reading them through.
    real, virtual = shard_of(records, "real"), shard_of(records, "virtual")
    with open(real, "rb") as handle:
        data = handle.read()
    first = 8 + 4 + int.from_bytes(data[:8], "little") + 4  # one whole record
    with open(real, "wb") as handle:
        handle.write(data[:first])
    truncate(virtual)
    with pytest.raises(DataError, match="every shard"):
        open_records(records)
    summary, lines, _ = make(corpus, records)
    assert len(lines) == 2 and lines[0] == (
        f"{real} is damaged (holds 1 records, 3 were written): decoding its 3 songs of real "
        "(real_0.wav, real_1.wav, real_2.wav) again from their audio files"), lines
    assert lines[1].startswith(f"{virtual} is damaged (unreadable: truncated record at ")
    assert summary.decoded == 6
    upgraded = manifest(records)
    assert set(upgraded["shards"]) == {e["shard"] for e in upgraded["files"].values()}
    assert_whole(records, corpus)


# ---------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_while_making_records_leaves_the_earlier_records_and_no_traceback(tmp_path):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    make(corpus, records)
    before = {name: open(os.path.join(records, name), "rb").read() for name in listing(records)}
    for j in range(6):  # six new songs: two new shards' worth
        path = os.path.join(corpus.dirs[1], f"new_{j}.wav")
        corpus.samples[path] = song(1.0, 100 + j)
        sf.write(path, corpus.samples[path], RATE, subtype="FLOAT")
    # Held at the 5th new song: the first new shard is complete and the second half written.
    process = start_slow(tmp_path, [*corpus.dirs, "--out", records, *FLAGS], hold_at=5)
    assert started(process, 5), finish(process)
    assert any(name.startswith(".shard-") for name in os.listdir(records))  # half a shard
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == "data_loader.py: interrupted"
    # Nothing recorded, nothing left behind: not the half shard, not the complete new one.
    assert {name: open(os.path.join(records, name), "rb").read()
            for name in listing(records)} == before
    summary, lines, _ = make(corpus, records)
    assert (summary.written, summary.decoded, lines) == (12, 6, [])
    assert_whole(records, corpus)


# ---------------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_while_the_first_finishes_and_a_dead_ones_lock_is_taken(
        tmp_path, capsys):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    args = [*corpus.dirs, "--out", records, *FLAGS]
    first = start_slow(tmp_path, args, hold_at=2)
    assert started(first, 2), finish(first)
    holder = json.load(open(os.path.join(records, ".lock")))
    assert holder["pid"] == first.pid and holder["program"] == "slow_data_loader.py"

    second = subprocess.run([sys.executable, os.path.join(ROOT, "data_loader.py"), *args],
                            cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    error = second.stderr.rstrip().splitlines()[-1]
    assert error.startswith(f"data_loader.py: error: {records} is in use by slow_data_loader.py "
                            f"(pid {first.pid} on ")
    assert "one run at a time writes it" in error
    assert not os.path.exists(os.path.join(records, "manifest.json"))  # it wrote nothing

    open(first.files.go, "w").close()
    code, out, err = finish(first)
    assert code == 0 and out.splitlines()[-1].startswith("written: 6 files ("), err
    assert ".lock" not in os.listdir(records)
    assert_whole(records, corpus)

    # A lock left by a process that is gone (the refused one's pid) is taken over with a warning.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with open(os.path.join(records, ".lock"), "w") as handle:
        json.dump({"pid": int(dead.stdout), "host": socket.gethostname(),
                   "program": "data_loader.py", "since": 0}, handle)
    os.remove(corpus.dirs[0] + "/real_2.wav")
    capsys.readouterr()
    assert data_loader.main(args) == 0
    out, err = capsys.readouterr()
    warned = [line for line in err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and f"pid {int(dead.stdout)}" in warned[0]
    assert "taking the lock over" in warned[0]
    assert out.splitlines()[-1].startswith("written: 5 files (")
    assert ".lock" not in os.listdir(records)


def test_partial_files_of_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    corpus = make_corpus(tmp_path / "audio")
    records = str(tmp_path / "records")
    make(corpus, records)
    for name in (".shard-00007.4242.part.tfrecord", ".manifest.4242.part.json"):
        with open(os.path.join(records, name), "wb") as handle:
            handle.write(b"half")
    make(corpus, records)
    assert not [name for name in os.listdir(records) if ".part" in name]
    assert_whole(records, corpus)


# ---------------------------------------------------------------------------------- special files
def run_in_thread(function, timeout=120):
    """``function()`` in a daemon thread; fails (instead of hanging) if it blocks."""
    result = {}

    def target():
        try:
            result["value"] = function()
        except BaseException as error:  # pragma: no cover - reported below
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked: a special file was opened"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_fifos_sockets_devices_and_unreadable_places_are_skipped_and_named(
        tmp_path, capsys, monkeypatch):
    corpus = make_corpus(tmp_path / "audio")
    real = corpus.dirs[0]
    fifo, sock, device = (os.path.join(real, name) for name in ("pipe.wav", "sock.wav",
                                                                 "null.wav"))
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(real)  # a socket's path must be short: bind it by its relative name
    server.bind("sock.wav")
    os.symlink(os.devnull, device)
    locked_dir = os.path.join(real, "locked")
    locked_file = os.path.join(real, "secret.wav")
    write_song(os.path.join(locked_dir, "hidden_song.wav"), song(1.0, 50), RATE)
    write_song(locked_file, song(1.0, 51), RATE)

    # As root, chmod cannot make these unreadable: the one OS call fails instead.
    real_scandir, real_open = os.scandir, open

    def scandir(path="."):
        if os.fsdecode(path) == locked_dir:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    def opener(path, *args, **kwargs):
        if path == locked_file:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr("utils.audio.signal.open", opener, raising=False)
    records = str(tmp_path / "records")
    try:
        capsys.readouterr()
        code = run_in_thread(lambda: data_loader.main([*corpus.dirs, "--out", records, *FLAGS]))
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    skipped = {line.split(": ", 2)[1]: line.split(": ", 2)[2]
               for line in out.splitlines() if line.startswith("skipped: ")}
    assert skipped == {
        fifo: "not a regular file (a FIFO), not read",
        sock: "not a regular file (a socket), not read",
        device: "not a regular file (a character device), not read",
        locked_dir: "cannot read folder: Permission denied",
        locked_file: "cannot read: Permission denied",
    }
    assert out.splitlines()[-1].startswith("written: 6 files (")
    assert out.splitlines()[-1].endswith("skipped: 5 files")
    assert "warning:" not in err and "error:" not in err  # named in the summary only

    # An audio folder that cannot be read at all is refused (exit 2) with one line.
    def unreadable_top(path="."):
        if os.fsdecode(path) == real:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", unreadable_top)
    assert data_loader.main([*corpus.dirs, "--out", records, *FLAGS]) == 2
    assert capsys.readouterr().err.strip() == (
        f"data_loader.py: error: audio folder cannot be read: {real} (cannot read folder: "
        "Permission denied); fix its permissions")


# ---------------------------------------------------------------------------------- own outputs
def test_a_runs_outputs_inside_a_data_folder_are_never_read_as_songs(tmp_path, capsys):
    from utils.runs.run_folder import TaskInfo
    from utils.training.data import prepare_training_data

    corpus = make_corpus(tmp_path / "audio")
    real = corpus.dirs[0]
    config = CONFIG.replace(
        data_dirs=corpus.dirs, records_dir=os.path.join(real, "records"),
        checkpoint_dir=os.path.join(real, "ck"), logdir=os.path.join(real, "logs"),
        output_dir=os.path.join(real, "out"))
    for folder in ("out", "ck", "logs", "records"):  # what an earlier run left there
        write_song(os.path.join(real, folder, "sample.wav"), song(1.0, 60), RATE)
    collectives = types.SimpleNamespace(task=TaskInfo(), barrier=lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = prepare_training_data(config, collectives, log=lambda _: None)
    lines = [str(w.message) for w in caught]
    assert lines == [f"--output_dir {config.output_dir}, --checkpoint_dir {config.checkpoint_dir}"
                     f", --logdir {config.logdir}, --records_dir {config.records_dir} lie(s) "
                     f"inside the data folder {real}: files under them are never read as songs "
                     "(keep outputs outside the data folders)"]
    assert sorted(data.records.song_labels) == sorted(corpus.samples)

    # An output folder that is a data folder itself is refused (exit 2 in the CLIs).
    with pytest.raises(RefusedError, match=f"--output_dir {real} is the data folder {real} "):
        prepare_training_data(config.replace(output_dir=real), collectives, log=lambda _: None)

    # data_loader.py --out inside an audio folder: not walked, said once.
    made = os.path.join(real, "made")
    write_song(os.path.join(made, "stray.wav"), song(1.0, 61), RATE)
    capsys.readouterr()
    assert data_loader.main([real, "--out", made, *FLAGS]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "warning:" in line] == [
        f"data_loader.py: warning: --out {made} lie(s) inside the data folder {real}: files "
        "under them are never read as songs (keep outputs outside the data folders)"]
    earlier = [os.path.join(real, folder, "sample.wav") for folder in ("out", "ck", "logs",
                                                                        "records")]
    # That run's outputs are songs to this one; only its own --out is left out.
    assert sorted(manifest(made)["files"]) == sorted(
        [p for p in corpus.samples if real in p] + earlier)
    # ... and a folder beside it that only shares its name's start is not inside it.
    beside = real + "_takes"
    assert records_writer.outputs_inside([real], [("--out", beside)]) == []


# ---------------------------------------------------------------------------------- world cache
def test_a_damaged_world_cache_shard_is_recomputed_and_refused_until_then(tmp_path, monkeypatch):
    pytest.importorskip("pyworld")
    from utils.audio import world as world_features
    from utils.data import world_cache as world_records

    corpus = make_corpus(tmp_path / "audio", per_singer=2)
    config = CONFIG.replace(feature="world", world_dims=16, window_size=16)
    records = str(tmp_path / "records")
    make(corpus, records, config)
    folder = world_records.cache_dir(records, config)
    names = sorted({e["shard"] for e in manifest(records)["files"].values()})
    damaged = os.path.join(folder, names[0])
    truncate(damaged)
    with pytest.raises(DataError) as error:
        world_records.cached_shards(records, config, names)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"the world features cached in {damaged} are damaged "
                                       "(truncated: ")
    assert "--feature world" in str(error.value)

    analysed = []
    real_analyse = world_features.analyse
    monkeypatch.setattr(world_features, "analyse",
                        lambda samples, cfg: analysed.append(len(samples)) or
                        real_analyse(samples, cfg))
    summary, lines, _ = make(corpus, records, config)
    in_shard = [e for e in manifest(records)["files"].values() if e["shard"] == names[0]]
    assert summary.decoded == 0 and len(analysed) == len(in_shard)  # that shard's songs only
    assert lines == [f"{damaged} is damaged (truncated: {lines[0].split('truncated: ')[1]}"]
    assert lines[0].endswith(f"analysing the songs of {names[0]} again")
    assert len(world_records.cached_shards(records, config, names)) == len(names)

    # An index older than its checks is verified by reading, and upgraded by the next make.
    index_path = os.path.join(folder, "index.json")
    with open(index_path) as handle:
        index = json.load(handle)
    del index["checks"]
    with open(index_path, "w") as handle:
        json.dump(index, handle)
    assert len(world_records.cached_shards(records, config, names)) == len(names)
    make(corpus, records, config)
    with open(index_path) as handle:
        assert set(json.load(handle)["checks"]) == set(names)
