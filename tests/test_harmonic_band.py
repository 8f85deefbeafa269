"""utils/migration/harmonic_band.py: changes below the band keep the source's harmonics, above it
they are whole; and the eq baseline with and without the band."""

import numpy as np
import pytest

from common_definitions import Config
from utils.evaluation.metrics import snr_db
from utils.migration.bin_stats import BinStats
from utils.migration.eq_baseline import eq_song
from utils.migration.harmonic_band import RAMP_HZ, envelope, keep_harmonics

RATE, BINS = 16000, 256
FREQS = np.linspace(0.0, RATE / 2.0, BINS)


def harmonic_log_mag(f0: float, frames: int = 6) -> np.ndarray:
    """(frames, bins) log-magnitudes (nats) of a harmonic comb at f0 Hz: peaks 4 nats high."""
    comb = 4.0 * np.exp(-0.5 * ((FREQS[None, :] % f0 - f0 / 2) / (f0 / 8)) ** 2)
    tilt = -FREQS / 2000.0
    return np.repeat(comb + tilt, frames, axis=0) - 3.0


def test_a_smooth_change_passes_whole_and_ripple_is_dropped_below_the_band():
    source = harmonic_log_mag(250.0)
    # Slow swells across frequency (cosines the lifter keeps): an envelope passes whole.
    gain = (1.5 * np.cos(np.pi * FREQS / 8000.0) + 0.5 * np.cos(5 * np.pi * FREQS / 8000.0))
    out = keep_harmonics(source + gain[None], source, RATE, below_hz=1000.0)
    np.testing.assert_allclose(out - source, np.broadcast_to(gain, out.shape), atol=0.02)

    # A change that fills the valleys between the harmonics is fine structure: dropped below
    # the band (the peaks keep their height above the valleys), kept whole above it.
    flatten = (source.max() - source) * 0.8
    out = keep_harmonics(source + flatten, source, RATE, below_hz=1000.0)
    change = out - source
    low = FREQS < 1000.0 - RAMP_HZ / 2
    high = FREQS > 1000.0 + RAMP_HZ / 2
    ripple_kept_low = np.std(change[:, low] - envelope(flatten, RATE)[:, low])
    assert ripple_kept_low < 1e-5
    np.testing.assert_allclose(change[:, high], flatten[:, high], atol=1e-5)
    # Below the band the source's peak-to-valley contrast is what it was.
    contrast = lambda x: np.ptp(x[:, (FREQS > 250) & (FREQS < 500)], axis=1)  # noqa: E731
    np.testing.assert_allclose(contrast(out), contrast(source), rtol=0.15)
    assert np.all(contrast(source + flatten) < 0.5 * contrast(source))


def test_no_change_and_no_band_are_identities():
    source = harmonic_log_mag(180.0)
    np.testing.assert_allclose(keep_harmonics(source, source, RATE, 1000.0), source, atol=1e-6)
    out = source + np.random.default_rng(0).normal(size=source.shape)
    np.testing.assert_array_equal(keep_harmonics(out, source, RATE, 0.0),
                                  out.astype(np.float32))


def test_envelope_is_linear_and_keeps_constants():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, BINS)), rng.normal(size=(3, BINS))
    np.testing.assert_allclose(envelope(a + 2 * b, RATE), envelope(a, RATE) + 2 * envelope(b, RATE),
                               atol=1e-12)
    np.testing.assert_allclose(envelope(np.full((2, BINS), 3.0), RATE), 3.0, atol=1e-12)


@pytest.fixture(scope="module")
def voiced():
    config = Config()
    t = np.arange(int(1.5 * config.sampling_rate)) / config.sampling_rate
    song = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in range(1, 12)).astype(np.float32)
    noise = np.random.default_rng(2).normal(size=t.size).astype(np.float32)
    return config, 0.2 * song, 0.05 * noise


def test_eq_with_the_band_is_exact_at_strength_0_and_changes_less_below_the_band(voiced):
    from utils.audio.signal import spectrogram

    config, song, noise = voiced
    reference = BinStats.empty(config.n_bins).add(spectrogram(noise, config)[0].numpy())
    assert snr_db(song, eq_song(song, config, reference, 0.0, harmonic_hz=1000.0)) >= 40.0
    plain = eq_song(song, config, reference, 1.0)
    banded = eq_song(song, config, reference, 1.0, harmonic_hz=1000.0)
    low = FREQS < 700.0

    def contrast(out):
        """Mean over frames of the spread of the low bins: the harmonics' peaks over valleys."""
        return np.mean(np.std(spectrogram(out, config)[0].numpy()[:, low], axis=1))

    # Flattening toward noise fills the valleys between the low harmonics; with the band less
    # (not none: a modified STFT resynthesised with the source phase is not quite itself).
    assert contrast(plain) < contrast(banded) - 0.4 < contrast(song)
