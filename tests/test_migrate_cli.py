"""migrate.py as a user runs it: a subprocess, its files, and one-line errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common_definitions import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _migrate(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "migrate.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def _assert_one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("migrate.py: error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint trained for a few steps by pipeline.Trainer on a small demo corpus."""
    from pipeline import Trainer
    from utils.data.demo_data import make_demo_corpus

    root = tmp_path_factory.mktemp("cli")
    paths = make_demo_corpus(str(root / "demo"), songs_per_singer=2, song_seconds=6.0)
    config = Config(
        k_glow=1, l_glow=2, hidden_channels=8, window_size=32, batch_size=4, epochs=1,
        steps_per_epoch=4, warmup_steps=2, checkpoint_every=4, log_every=2,
        data_dirs=(str(root / "demo" / "virtual"), str(root / "demo" / "real")),
        records_dir=str(root / "records"), checkpoint_dir=str(root / "ck"),
        logdir=str(root / "logs"), output_dir=str(root / "out"))
    Trainer(config, progress=False, log=lambda message: None).fit()
    return dict(root=root, config=config, ck=config.checkpoint_dir, source=paths["virtual"][0],
                real=str(root / "demo" / "real"))


def test_migrates_at_strength_zero_exactly_and_writes_wav_png_and_stats(setup):
    from utils.audio.signal import load_audio
    from utils.evaluation.metrics import snr_db

    root, out, stats = setup["root"], setup["root"] / "zero.wav", setup["root"] / "ref.npz"
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", setup["source"],
                      "--reference", setup["real"], "--method", "match", "--strength", "0",
                      "--output", out, "--save_reference_stats", stats)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    source = load_audio(setup["source"], setup["config"].sampling_rate)
    migrated = load_audio(str(out), setup["config"].sampling_rate)
    assert migrated.shape == source.shape
    assert snr_db(source, migrated) >= 40.0
    with open(root / "zero.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert stats.is_file()

    # The saved statistics are reused as reference (and source) statistics.
    moved = root / "shift.wav"
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", setup["source"],
                      "--reference", stats, "--source_stats", stats, "--method", "shift",
                      "--strength", "0.5", "--output", moved)
    assert result.returncode == 0, result.stderr
    assert load_audio(str(moved), setup["config"].sampling_rate).shape == source.shape
    assert (root / "shift.png").is_file()


def test_a_source_shorter_than_one_patch_is_padded_with_a_warning(setup):
    from utils.audio.signal import load_audio, save_wav

    config = setup["config"]
    short = setup["root"] / "short.wav"
    rng = np.random.default_rng(0)
    save_wav(str(short), 0.3 * rng.standard_normal(config.patch_samples // 2), config.sampling_rate)
    out = setup["root"] / "short_out.wav"
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", short, "--reference",
                      setup["real"], "--method", "midpoint", "--strength", "1", "--output", out)
    assert result.returncode == 0, result.stderr
    assert "migrate.py: warning:" in result.stderr and "shorter than one patch" in result.stderr
    assert len(load_audio(str(out), config.sampling_rate)) == config.patch_samples // 2


def test_silent_source_is_a_one_line_error(setup):
    from utils.audio.signal import save_wav

    silent = setup["root"] / "silent.wav"
    config = setup["config"]
    save_wav(str(silent), np.zeros(3 * config.patch_samples), config.sampling_rate)
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", silent, "--reference",
                      setup["real"], "--output", setup["root"] / "never.wav")
    _assert_one_line_error(result, "silent")
    assert not (setup["root"] / "never.wav").exists()


def test_empty_reference_folder_is_a_one_line_error(setup):
    empty = setup["root"] / "empty"
    empty.mkdir()
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", setup["source"],
                      "--reference", empty, "--output", setup["root"] / "never.wav")
    _assert_one_line_error(result, "no audio files")


def test_statistics_of_another_model_are_refused(setup):
    from utils.runs.latent_stats import LatentStats

    other = setup["config"].replace(hidden_channels=16)
    stats = LatentStats(other, [(128, 2), (64, 8)])
    stats.update(np.zeros((1, 32 * 256), np.float32), 32)
    path = setup["root"] / "other.npz"
    stats.save(str(path))
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", setup["source"],
                      "--reference", path, "--output", setup["root"] / "never.wav")
    _assert_one_line_error(result, "another model configuration", "hidden_channels")


def test_checkpoint_of_another_config_and_missing_checkpoint(setup, tmp_path):
    import shutil

    copy = tmp_path / "ck"
    shutil.copytree(setup["ck"], copy)
    with open(copy / "config.json", encoding="utf-8") as handle:
        data = json.load(handle)
    data["k_glow"] = 3
    with open(copy / "config.json", "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    result = _migrate("--checkpoint_dir", copy, "--source", setup["source"], "--reference",
                      setup["real"], "--output", tmp_path / "never.wav")
    _assert_one_line_error(result)

    result = _migrate("--checkpoint_dir", tmp_path / "missing", "--source", setup["source"],
                      "--reference", setup["real"], "--output", tmp_path / "never.wav")
    _assert_one_line_error(result, "checkpoint folder not found")


def test_bad_flags_are_one_line_usage_errors(setup):
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", setup["source"],
                      "--reference", setup["real"], "--output", "x.wav", "--method", "average")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("migrate.py: error:") and len(result.stderr.splitlines()) == 1
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", setup["source"],
                      "--reference", setup["real"], "--output", "x.wav", "--strength", "nan")
    assert result.returncode == 2 and "must be a finite number" in result.stderr


def test_ctrl_c_exits_130_without_a_traceback_and_keeps_the_earlier_wav(setup, tmp_path):
    out = tmp_path / "song.wav"
    out.write_bytes(b"an earlier result")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "migrate.py"), "--checkpoint_dir", setup["ck"],
         "--source", setup["source"], "--reference", setup["real"], "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    time.sleep(1.0)  # TensorFlow is still loading
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.rstrip().splitlines()[-1] == f"migrate.py: interrupted; {out} was not written"
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def test_a_folder_source_migrates_every_song_into_an_output_folder(setup, tmp_path):
    import shutil

    songs = tmp_path / "songs"
    (songs / "sub").mkdir(parents=True)
    shutil.copy(setup["source"], songs / "sub" / "take.wav")
    (songs / "lyrics.mp3").write_text("not audio")
    out = tmp_path / "out"
    result = _migrate("--checkpoint_dir", setup["ck"], "--source", songs, "--reference",
                      setup["real"], "--method", "shift", "--strength", "0.5", "--output", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "sub", "sub/take.json", "sub/take.png", "sub/take.wav"]
    skipped = [line for line in result.stderr.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and skipped[0].startswith("migrate.py: warning: skipping lyrics.mp3:")
    assert result.stdout.rstrip().splitlines()[-1] == (
        "migrated: 1 song (6.00 s of audio), skipped: 1")
    assert sorted(p.name for p in songs.rglob("*")) == ["lyrics.mp3", "sub", "take.wav"]
