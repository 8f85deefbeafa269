"""The no-model baseline (``eq``) and the frame-level judge, on synthetic voices."""

import numpy as np
import pytest

from common_definitions import Config
from utils.evaluation.frame_judge import FrameJudge
from utils.evaluation.metrics import snr_db
from utils.migration.bin_stats import BinStats, song_bin_stats
from utils.migration.eq_baseline import eq_song

RATE = 16000


def _voice(f0, formant, seconds=2.0, seed=0, noise=0.0):
    """A harmonic tone with one resonance (a crude vowel), optionally with breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    harmonics = np.arange(1, int(4000 / f0))
    gains = 1.0 / (1.0 + ((harmonics * f0 - formant) / 300.0) ** 2)
    x = (gains[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t)).sum(axis=0)
    x = x + noise * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def test_bin_stats_stream_like_one_pass():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(50, 8))
    whole = BinStats.empty(8).add(frames)
    parts = BinStats.empty(8).add(frames[:20]).add(frames[20:])
    np.testing.assert_allclose(parts.mean, whole.mean)
    np.testing.assert_allclose(parts.std, whole.std)
    np.testing.assert_allclose(whole.std, frames.std(axis=0))


def test_eq_at_strength_zero_returns_the_source_and_moves_toward_the_reference():
    config = Config()
    source = _voice(220.0, 700.0)
    reference = song_bin_stats([_voice(200.0, 2500.0, seed=1)], config)
    same = eq_song(source, config, reference, 0.0)
    assert snr_db(source, same) > 60.0
    moved = eq_song(source, config, reference, 1.0)
    assert moved.shape == source.shape and np.isfinite(moved).all()
    after = song_bin_stats([moved], config)
    before = song_bin_stats([source], config)
    # The moved song's per-bin means sit much closer to the reference's than the source's did.
    assert (np.abs(after.mean - reference.mean).mean()
            < 0.5 * np.abs(before.mean - reference.mean).mean())


def test_frame_judge_tells_two_voices_apart_on_unseen_songs():
    a = [_voice(f0, 700.0, seed=k) for k, f0 in enumerate((196.0, 220.0, 247.0))]
    b = [_voice(f0, 2500.0, seed=k, noise=0.02) for k, f0 in enumerate((196.0, 220.0, 247.0))]
    judge = FrameJudge(n_components=4).fit({"a": a, "b": b}, RATE)
    assert judge.labels == ["a", "b"]
    assert judge.probability(_voice(262.0, 700.0, seed=9), "a") > 0.9
    assert judge.probability(_voice(262.0, 2500.0, seed=9, noise=0.02), "b") > 0.9
    score = judge.score(_voice(262.0, 700.0, seed=9))
    assert abs(sum(score.values()) - 1.0) < 1e-9
    with pytest.raises(Exception, match="unknown singer"):
        judge.probability(a[0], "c")
