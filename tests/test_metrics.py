"""Objective measures: SNR, log-spectral distance, pitch preservation, the singer classifier and
the shared bits/dim definition."""

import math

import numpy as np
import pytest
import soundfile

from utils.data.demo_data import DEMO_SINGERS, make_demo_corpus
from utils.evaluation.metrics import (
    SingerClassifier,
    bits_per_dim_from_log_prob,
    compare_pitch,
    log_spectral_distance,
    pitch_metrics,
    pitch_track,
    snr_db,
)

SR = 16000


def _tone(hz, seconds=3.0, sr=SR, amplitude=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _shift(hz, cents):
    return hz * 2.0 ** (cents / 1200.0)


# ------------------------------------------------------------------ SNR and LSD
def test_snr_db_exact_values():
    x = np.array([1.0, -1.0, 1.0, -1.0])
    assert snr_db(x, x) == math.inf
    assert snr_db(x, 0.9 * x) == pytest.approx(20.0)  # error = 0.1 x
    assert snr_db(x, 0.5 * x) == pytest.approx(10 * math.log10(4.0))
    assert snr_db(x, np.zeros(4)) == pytest.approx(0.0)
    # Power 1 against an error of constant 0.1: 10 log10(1 / 0.01).
    assert snr_db(x, x + 0.1) == pytest.approx(20.0)
    assert snr_db(np.zeros(4), x) == -math.inf
    assert snr_db(np.zeros(3), np.zeros(3)) == math.inf
    # A padded estimate is compared over the common length.
    assert snr_db(x, np.concatenate([0.9 * x, [5.0, 5.0]])) == pytest.approx(20.0)


def test_log_spectral_distance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR).astype(np.float32)
    assert log_spectral_distance(x, x, SR) == pytest.approx(0.0, abs=1e-9)
    # A gain of 2 shifts every bin by exactly 20 log10(2) dB.
    assert log_spectral_distance(x, 2 * x, SR) == pytest.approx(20 * math.log10(2.0), rel=1e-4)
    noisy = x + 0.3 * rng.standard_normal(SR).astype(np.float32)
    assert 0.5 < log_spectral_distance(x, noisy, SR) < log_spectral_distance(x, 0.05 * noisy, SR)
    assert log_spectral_distance(np.zeros(SR), np.zeros(SR), SR) == 0.0


# ------------------------------------------------------------------ pitch
def test_pitch_track_of_a_tone():
    f0, voiced = pitch_track(_tone(220.0), SR)
    assert f0.shape == voiced.shape and voiced.dtype == bool
    assert len(f0) == 3 * SR // 512 + 1
    assert voiced.mean() > 0.9
    assert np.all(np.isnan(f0[~voiced]))
    cents = 1200 * np.log2(f0[voiced] / 220.0)
    assert np.median(np.abs(cents)) < 8.0
    silent_f0, silent_voiced = pitch_track(np.zeros(SR, dtype=np.float32), SR)
    assert not silent_voiced.any() and np.all(np.isnan(silent_f0))


def test_pitch_track_other_rates_share_the_frame_grid():
    import librosa

    tone = _tone(330.0, seconds=2.0)
    tone_22k = librosa.resample(tone, orig_sr=SR, target_sr=22050)
    f0_16k, _ = pitch_track(tone, SR)
    f0_22k, _ = pitch_track(tone_22k, 22050)
    assert abs(len(f0_16k) - len(f0_22k)) <= 1
    assert compare_pitch(f0_16k, f0_22k)["median_abs_cents"] < 3.0


@pytest.mark.parametrize("hz", [196.0, 440.0])
def test_pitch_metrics_on_shifted_tones(hz):
    tone = _tone(hz)
    far = pitch_metrics(tone, _tone(_shift(hz, 100.0)), SR)
    near = pitch_metrics(tone, _tone(_shift(hz, 20.0)), SR)
    same = pitch_metrics(tone, tone, SR)
    assert far["raw_pitch_accuracy"] < 0.05 and abs(far["median_abs_cents"] - 100.0) < 5.0
    assert near["raw_pitch_accuracy"] > 0.95 and abs(near["median_abs_cents"] - 20.0) < 5.0
    assert abs(near["rmse_cents"] - 20.0) < 8.0
    assert same["raw_pitch_accuracy"] == 1.0 and same["median_abs_cents"] == 0.0
    for result in (far, near, same):
        assert result["voiced_frames"] > 80 and result["voicing_recall"] > 0.9


def test_compare_pitch_counts_only_frames_voiced_in_both():
    src = np.array([100.0, 100.0, np.nan, 100.0, 100.0])
    out = np.array([100.0, 200.0, 100.0, np.nan, 101.0, 300.0])  # longer: extra frame ignored
    result = compare_pitch(src, out)
    assert result["voiced_frames"] == 3
    assert result["raw_pitch_accuracy"] == pytest.approx(2 / 3)
    assert result["median_abs_cents"] == pytest.approx(1200 * np.log2(1.01))
    assert result["voicing_recall"] == pytest.approx(3 / 4)
    empty = compare_pitch(src, np.full(5, np.nan))
    assert empty["voiced_frames"] == 0 and math.isnan(empty["raw_pitch_accuracy"])


# ------------------------------------------------------------------ singer classifier
@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo") / "demo_data")
    paths = make_demo_corpus(root)
    loaded = {s: [soundfile.read(p, dtype="float32")[0] for p in paths[s]] for s in DEMO_SINGERS}
    return root, loaded


def test_singer_classifier_leave_one_song_out(songs):
    _, loaded = songs
    count = len(loaded["real"])
    for held in range(count):
        train = {s: [x for i, x in enumerate(loaded[s]) if i != held] for s in DEMO_SINGERS}
        clf = SingerClassifier().fit(train, SR)
        p_real = clf.probability(loaded["real"][held], "real")
        p_virtual = clf.probability(loaded["virtual"][held], "real")
        assert p_real > 0.8, f"held-out real song {held}: P(real) = {p_real:.3f}"
        assert p_virtual < 0.2, f"held-out virtual song {held}: P(real) = {p_virtual:.3f}"


def test_singer_classifier_api(songs):
    root, loaded = songs
    clf = SingerClassifier().fit_folders({s: f"{root}/{s}" for s in DEMO_SINGERS}, SR)
    assert clf.labels == sorted(DEMO_SINGERS)
    scores = clf.score(loaded["real"][0])
    assert set(scores) == set(DEMO_SINGERS) and sum(scores.values()) == pytest.approx(1.0)
    assert scores["real"] == pytest.approx(clf.probability(loaded["real"][0], "real"))
    # Features: 20 MFCC means and 20 standard deviations per whole second.
    assert clf.segment_features(loaded["real"][0], SR).shape == (20, 40)
    assert clf.segment_features(loaded["real"][0][: SR // 2], SR).shape == (1, 40)
    # Loudness alone does not change the verdict.
    quiet = clf.probability(0.1 * loaded["real"][0], "real")
    assert quiet == pytest.approx(scores["real"], abs=0.02)
    with pytest.raises(KeyError):
        clf.probability(loaded["real"][0], "opera")
    with pytest.raises(ValueError):
        clf.score(loaded["real"][0], sampling_rate=22050)
    with pytest.raises(RuntimeError):
        SingerClassifier().score(loaded["real"][0])
    with pytest.raises(ValueError):
        SingerClassifier().fit({"real": loaded["real"]}, SR)


# ------------------------------------------------------------------ bits/dim
def test_bits_per_dim_from_log_prob():
    assert bits_per_dim_from_log_prob(-math.log(2.0) * 100, 100) == pytest.approx(1.0)
    assert bits_per_dim_from_log_prob(0.0, 10) == 0.0
    values = bits_per_dim_from_log_prob(np.array([-10.0, -20.0]), 5)
    np.testing.assert_allclose(values, [10 / (5 * math.log(2)), 20 / (5 * math.log(2))])
    with pytest.raises(ValueError):
        bits_per_dim_from_log_prob(-1.0, 0)
