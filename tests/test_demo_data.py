"""The synthetic demo corpus: determinism, caching, levels, and that the two singers sing the same
notes while only the real one has vibrato."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from utils.data import demo_data
from utils.data.demo_data import (DEMO_SINGERS, Note, make_demo_corpus, random_melody,
                                  synthesize_song)
from utils.evaluation.metrics import PITCH_HOP_SECONDS, compare_pitch, pitch_track

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000
PEAK = 10.0 ** (-3.0 / 20.0)


def _read(path):
    samples, rate = soundfile.read(path, dtype="float32")
    return samples, rate


def _bytes(paths):
    return {singer: [open(p, "rb").read() for p in paths[singer]] for singer in DEMO_SINGERS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The default corpus (2 singers x 6 songs x 20 s at 16 kHz)."""
    root = str(tmp_path_factory.mktemp("demo") / "demo_data")
    started = time.perf_counter()
    paths = make_demo_corpus(root)
    return root, paths, time.perf_counter() - started


@pytest.fixture(scope="module")
def tracks(corpus):
    """pYIN f0 (Hz) of songs 0 and 1 of both singers, keyed (singer, index)."""
    _, paths, _ = corpus
    out = {}
    for singer in DEMO_SINGERS:
        for index in (0, 1):
            samples, rate = _read(paths[singer][index])
            out[singer, index] = pitch_track(samples, rate)[0]
    return out


# ------------------------------------------------------------------ layout, levels, speed
def test_default_corpus_layout_levels_and_speed(corpus):
    root, paths, seconds = corpus
    assert seconds < 20.0, f"generating the default corpus took {seconds:.1f} s"
    assert set(paths) == set(DEMO_SINGERS)
    for singer in DEMO_SINGERS:
        names = [os.path.basename(p) for p in paths[singer]]
        assert names == [f"song_{i:02d}.wav" for i in range(6)]
        for path in paths[singer]:
            assert os.path.dirname(path) == os.path.join(root, singer)
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            samples, _ = _read(path)
            assert samples.shape == (20 * SR,)
            assert np.all(np.isfinite(samples))
            peak = np.abs(samples).max()
            peak_db = 20 * np.log10(peak)
            assert abs(peak_db + 3.0) < 0.05, f"{path} peaks at {peak_db:.2f} dBFS"
            rms_db = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2))
            assert rms_db > -25.0, f"{path} is nearly silent ({rms_db:.1f} dBFS RMS)"
    manifest = json.load(open(os.path.join(root, demo_data.MANIFEST_NAME)))
    assert manifest["params"]["seed"] == 0 and manifest["params"]["songs_per_singer"] == 6
    assert len(manifest["melodies"]) == 6


def test_second_call_reuses_files(corpus):
    root, paths, _ = corpus
    files = [p for singer in DEMO_SINGERS for p in paths[singer]]
    before = {p: os.stat(p).st_mtime_ns for p in files}
    started = time.perf_counter()
    again = make_demo_corpus(root)
    assert time.perf_counter() - started < 0.5
    assert again == paths
    assert {p: os.stat(p).st_mtime_ns for p in files} == before


# ------------------------------------------------------------------ determinism and regeneration
def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    small = dict(songs_per_singer=2, song_seconds=4.0)
    first = make_demo_corpus(str(tmp_path / "a"), seed=3, **small)
    second = make_demo_corpus(str(tmp_path / "b"), seed=3, **small)
    other = make_demo_corpus(str(tmp_path / "c"), seed=4, **small)
    assert _bytes(first) == _bytes(second)
    for singer in DEMO_SINGERS:
        for a, c in zip(first[singer], other[singer]):
            assert open(a, "rb").read() != open(c, "rb").read()


def test_changed_parameters_regenerate_and_drop_stale_files(tmp_path):
    root = str(tmp_path / "demo")
    three = make_demo_corpus(root, songs_per_singer=3, song_seconds=2.0, seed=1)
    assert all(os.path.exists(p) for p in three["real"])
    two = make_demo_corpus(root, songs_per_singer=2, song_seconds=3.0, seed=1)
    assert sorted(os.listdir(os.path.join(root, "real"))) == ["song_00.wav", "song_01.wav"]
    assert _read(two["virtual"][0])[0].shape == (3 * SR,)
    # overwrite=True rewrites even an up-to-date corpus (with the same content).
    content = _bytes(two)
    stamp = os.stat(two["real"][0]).st_mtime_ns
    time.sleep(0.01)
    make_demo_corpus(root, songs_per_singer=2, song_seconds=3.0, seed=1, overwrite=True)
    assert os.stat(two["real"][0]).st_mtime_ns != stamp
    assert _bytes(two) == content


def test_missing_file_or_manifest_triggers_regeneration(tmp_path):
    root = str(tmp_path / "demo")
    paths = make_demo_corpus(root, songs_per_singer=1, song_seconds=2.0)
    os.remove(paths["real"][0])
    make_demo_corpus(root, songs_per_singer=1, song_seconds=2.0)
    assert os.path.exists(paths["real"][0])
    os.remove(os.path.join(root, demo_data.MANIFEST_NAME))
    stamp = os.stat(paths["virtual"][0]).st_mtime_ns
    time.sleep(0.01)
    make_demo_corpus(root, songs_per_singer=1, song_seconds=2.0)
    assert os.stat(paths["virtual"][0]).st_mtime_ns != stamp
    assert os.path.exists(os.path.join(root, demo_data.MANIFEST_NAME))


# ------------------------------------------------------------------ melodies and the synthesiser
def test_random_melody_is_musical_and_exact_length():
    for seed in range(5):
        melody = random_melody(np.random.default_rng(seed), 12.5)
        assert abs(sum(n.seconds for n in melody) - 12.5) < 1e-9
        sung = [n for n in melody if n.pitch is not None]
        assert len(sung) >= 10 and any(n.pitch is None for n in melody)
        hz = demo_data.midi_to_hz([n.pitch for n in sung])
        assert hz.min() >= 150.0 and hz.max() <= 600.0
        assert all(float(n.pitch).is_integer() for n in sung)  # equal-tempered scale notes
        assert all(n.vowel in demo_data.VOWELS for n in sung)
    again = random_melody(np.random.default_rng(7), 5.0)
    assert again == random_melody(np.random.default_rng(7), 5.0)


def test_synthesize_song_contract():
    melody = [Note(None, 0.2), Note(60.0, 0.5, "a"), Note(64.0, 0.5, "i"), Note(None, 0.3)]
    for singer in DEMO_SINGERS:
        audio = synthesize_song(melody, singer, SR, np.random.default_rng(0))
        assert audio.dtype == np.float32 and audio.shape == (int(1.5 * SR),)
        assert abs(np.abs(audio).max() - PEAK) < 1e-4
    # Plain (pitch, seconds) pairs are accepted; a melody of rests is silence, not NaN.
    assert synthesize_song([(62, 0.4), (None, 0.1)], "real", 8000).shape == (4000,)
    assert not np.any(synthesize_song([(None, 0.5)], "real", SR))
    with pytest.raises(ValueError):
        synthesize_song(melody, "robot", SR)


def test_virtual_rests_are_silent_and_real_rests_breathe():
    melody = [Note(60.0, 0.6, "a"), Note(None, 0.6), Note(62.0, 0.6, "o")]
    rest = slice(int(0.75 * SR), int(1.05 * SR))
    virtual = synthesize_song(melody, "virtual", SR)
    real = synthesize_song(melody, "real", SR, np.random.default_rng(1))
    assert not np.any(virtual[rest])
    assert np.sqrt(np.mean(real[rest] ** 2)) > 1e-3


# ------------------------------------------------------------------ pitch: same notes, vibrato
def test_both_singers_follow_the_same_melody(tracks):
    for index in (0, 1):
        same = compare_pitch(tracks["virtual", index], tracks["real", index])
        assert same["voiced_frames"] > 400
        assert same["raw_pitch_accuracy"] >= 0.8, same
        assert same["median_abs_cents"] < 25.0, same
    different = compare_pitch(tracks["virtual", 0], tracks["virtual", 1])
    assert different["raw_pitch_accuracy"] < 0.3, different


def _cents(f0):
    return 1200.0 * np.log2(f0 / 440.0)


def test_real_singer_has_vibrato_and_virtual_does_not(tracks):
    for index in (0, 1):
        steps = {}
        for singer in DEMO_SINGERS:
            diff = np.abs(np.diff(_cents(tracks[singer, index])))
            steps[singer] = np.median(diff[np.isfinite(diff)])
        # Within notes the virtual pitch is flat; the real one keeps moving.
        assert steps["virtual"] < 1.0 and steps["real"] > 2.0, steps
        assert steps["real"] > 5 * steps["virtual"], steps

    # The real-minus-virtual deviation, detrended within each voiced stretch, peaks at 4-7 Hz.
    nfft = 256
    power = np.zeros(nfft // 2 + 1)
    for index in (0, 1):
        deviation = _cents(tracks["real", index]) - _cents(tracks["virtual", index])
        ok = np.isfinite(deviation)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(int), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start < 24:
                continue
            piece = deviation[start:stop]
            t = np.arange(len(piece))
            piece = piece - np.polyval(np.polyfit(t, piece, 1), t)
            power += np.abs(np.fft.rfft(piece * np.hanning(len(piece)), nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, PITCH_HOP_SECONDS)
    band = (freqs >= 2.0) & (freqs <= 12.0)
    peak = freqs[band][np.argmax(power[band])]
    assert 4.0 <= peak <= 7.0, f"pitch modulation peaks at {peak:.2f} Hz"


# ------------------------------------------------------------------ CLI
def test_cli_writes_a_corpus(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "utils.data.demo_data", "--out", str(out)]
    result = subprocess.run(command + ["--songs", "1", "--seconds", "1.5"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (out / "virtual" / "song_00.wav").exists() and (out / "real" / "song_00.wav").exists()
    bad = subprocess.run(command + ["--songs", "0"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "--songs" in bad.stderr
