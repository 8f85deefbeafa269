"""The bundled demo corpus: the same melodies sung by a "virtual" and a "real" singer.

Everything is synthesised here from a seed, so ``python train.py --demo``, the notebooks and the
tests work on a fresh machine with no data and no downloads.

The synthesiser is a source-filter model in numpy. A band-limited harmonic source (every harmonic
below Nyquist, with a glottal spectral tilt) is shaped by a cascade of vowel formant resonances,
evaluated as a spectral envelope on the harmonic amplitudes at a control rate of about 200 Hz, then
multiplied by note envelopes. The two singers differ the way a vocal synthesiser differs from a
person:

``virtual``
    pitch jumps exactly to each note's equal-tempered value and stays there (no vibrato, no
    jitter), fixed formants per vowel that switch at note onsets, a clean harmonic source, a fast
    attack and release on every note, digital silence between phrases.
``real``
    the same notes, but with portamento glides and onset scoops, a vibrato of 5-6.2 Hz whose depth
    (5-50 cents) and delay vary per note, per-note intonation errors, pitch jitter and amplitude
    shimmer, legato phrases, formants that glide between vowels (a slightly longer vocal tract and
    a "singer's formant" near 3 kHz), aspiration noise while singing and audible breaths in rests.

Timbre (the vocal tract's formants, the source's spectral tilt, breathiness), not added noise, is
what tells them apart most: the real singer sings its own, more central vowels
(:data:`REAL_VOWEL_FORMANTS`) through a longer, softer tract (formants 8 % lower and 35 % broader),
its harmonics fall off faster, and its noise floor is 65 dB below the peak.

Units: pitches are MIDI note numbers (69 = A4 = 440 Hz, fractional values allowed), durations and
song lengths in seconds, audio in float samples in [-1, 1] at ``sampling_rate`` Hz.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import scipy.signal
import soundfile

from utils.files import atomic_write, atomic_write_text

DEMO_SINGERS = ("virtual", "real")

# Bump when the synthesiser changes, so that corpora written by older code are regenerated.
GENERATOR_VERSION = 3
MANIFEST_NAME = "manifest.json"
PEAK_DBFS = -3.0

# Singing range of the melodies: MIDI 51 (155.6 Hz) .. 74 (587.3 Hz).
LOWEST_PITCH = 51
HIGHEST_PITCH = 74

# Average adult formant frequencies (Hz) of five sung vowels: F1, F2, F3, F4.
VOWEL_FORMANTS = {
    "a": (730.0, 1090.0, 2440.0, 3400.0),
    "e": (530.0, 1840.0, 2480.0, 3500.0),
    "i": (300.0, 2250.0, 3000.0, 3700.0),
    "o": (570.0, 840.0, 2410.0, 3300.0),
    "u": (320.0, 870.0, 2240.0, 3300.0),
}
VOWELS = tuple(sorted(VOWEL_FORMANTS))
FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 160.0, 250.0])
# The real singer's own realisation of the same vowels (a trained, "covered" singing voice): F1
# and F2 move toward the centre of the vowel space, each vowel in its own direction, and the
# upper formants cluster near 2.6-3.5 kHz. A per-frequency gain that is the same for every frame
# cannot turn one vowel space into the other.
REAL_VOWEL_FORMANTS = {
    "a": (650.0, 1180.0, 2600.0, 3450.0),
    "e": (470.0, 1640.0, 2580.0, 3500.0),
    "i": (350.0, 1930.0, 2680.0, 3550.0),
    "o": (520.0, 930.0, 2550.0, 3400.0),
    "u": (370.0, 800.0, 2450.0, 3350.0),
}
# ... with formants about 35 % broader (a softer, breathier tract).
_REAL_BANDWIDTH_SCALE = 1.35

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)

# Control-rate step of the synthesiser in seconds: fine enough for a 6 Hz vibrato sweeping
# harmonics through formants, coarse enough to keep the envelope maths negligible.
_CONTROL_SECONDS = 0.005

# Melodies wander at most this many scale degrees (about a sixth) from a central pitch shared by
# every song, as a singer transposes songs to suit the voice. A common tessitura also keeps the
# singer classifier from learning "high songs" instead of "this singer".
_TESSITURA_DEGREES = 5
_TESSITURA_CENTRE = 62  # D4, 294 Hz

# Timbre: the singers differ the way two voices do, above all in the vocal tract. Source tilt is
# the exponent of the harmonic amplitude (1/h is -6 dB/octave); the real singer is darker, has a
# longer vocal tract (every formant of its own vowels 8 % lower: a shift along frequency that
# depends on the vowel, which no fixed per-frequency gain can reproduce) and a singer's formant
# near 2.9 kHz.
_VIRTUAL_TILT = -1.0
_REAL_TILT = -1.4
_REAL_FORMANT_SCALE = 0.92
_SINGERS_FORMANT = 2.0  # extra linear gain of a 2.9 kHz bump
# Aspiration noise of the real singer relative to the peak of its harmonic signal (a harmonics-
# to-noise ratio of about 20 dB: breathy, not noisy), and its recording's noise floor in dB below
# that peak.
_ASPIRATION_LEVEL = 0.02
_NOISE_FLOOR_DB = -65.0


class Note(NamedTuple):
    """One event of a melody.

    pitch: MIDI note number (float; 69 = 440 Hz), or ``None`` for a rest.
    seconds: duration in seconds.
    vowel: the sung vowel, one of :data:`VOWELS` (ignored for rests) -- the "lyrics", shared by
        both singers.
    """

    pitch: Optional[float]
    seconds: float
    vowel: str = "a"


def midi_to_hz(pitch):
    """MIDI note number(s) -> frequency in Hz."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


# ---------------------------------------------------------------------------------- melodies
def random_melody(rng: np.random.Generator, seconds: float) -> List[Note]:
    """A random but singable melody lasting exactly ``seconds`` seconds.

    Phrases of 4-9 notes from a major or minor scale (mostly steps, some leaps, ending on a chord
    tone), at 80-120 beats per minute, separated by rests of 0.3-0.9 s; a short rest opens the
    song. Pitches stay within about a sixth of D4 and always within MIDI 51-74 (155-587 Hz).

    Returns a list of :class:`Note` whose ``seconds`` sum to ``seconds`` (the last event is cut to
    fit).
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    scale = MAJOR if rng.random() < 0.6 else NATURAL_MINOR
    tonic = int(rng.integers(LOWEST_PITCH, LOWEST_PITCH + 12))
    # Scale degrees spanning the whole range, as absolute MIDI pitches.
    ladder = [tonic + 12 * octave + step for octave in range(-1, 3) for step in scale]
    ladder = [p for p in ladder if LOWEST_PITCH <= p <= HIGHEST_PITCH]
    chord = {tonic % 12, (tonic + scale[2]) % 12, (tonic + 7) % 12}
    beat = 60.0 / rng.uniform(80.0, 120.0)
    durations = np.array([0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 3.0])

    # Every song sits in the same tessitura (as a singer transposes songs to suit the voice).
    centre = int(np.argmin([abs(p - _TESSITURA_CENTRE) for p in ladder]))
    position = centre
    notes: List[Note] = [Note(None, float(rng.uniform(0.15, 0.35)))]
    total = notes[0].seconds
    while total < seconds:
        for _ in range(int(rng.integers(4, 10))):
            step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, -3, 3, -4, 4],
                                  p=[.1, .2, .2, .08, .2, .12, .04, .02, .02, .01, .01]))
            # Stay within the tessitura: a step that would leave it turns back.
            if abs(position + step - centre) > _TESSITURA_DEGREES:
                step = -step
            position = int(np.clip(position + step, 0, len(ladder) - 1))
            beats = float(rng.choice(durations))
            vowel = VOWELS[rng.integers(len(VOWELS))]
            notes.append(Note(float(ladder[position]), beats * beat, vowel))
        # End the phrase on the nearest chord tone, held longer.
        tones = [i for i, p in enumerate(ladder) if p % 12 in chord]
        position = min(tones, key=lambda i: abs(i - position))
        notes.append(Note(float(ladder[position]), 2.0 * beat, VOWELS[rng.integers(len(VOWELS))]))
        notes.append(Note(None, float(rng.uniform(0.3, 0.9))))
        total = sum(n.seconds for n in notes)

    # Trim to the requested length; drop a sliver of a last note that no one could hear.
    out: List[Note] = []
    elapsed = 0.0
    for note in notes:
        remaining = seconds - elapsed
        if remaining <= 1e-9:
            break
        length = min(note.seconds, remaining)
        if note.pitch is not None and length < 0.1:
            out.append(Note(None, length))
        else:
            out.append(note._replace(seconds=length))
        elapsed += length
    return out


def _as_notes(melody: Sequence) -> List[Note]:
    """Accept :class:`Note`, ``(pitch, seconds)`` or ``(pitch, seconds, vowel)`` items."""
    notes = []
    for index, item in enumerate(melody):
        if isinstance(item, Note):
            notes.append(item)
        elif len(item) == 2:
            # Vowels are lyrics: derive them from the position so both singers agree.
            notes.append(Note(item[0], float(item[1]), VOWELS[index % len(VOWELS)]))
        else:
            notes.append(Note(item[0], float(item[1]), str(item[2])))
    for note in notes:
        if note.seconds <= 0:
            raise ValueError(f"note durations must be positive seconds, got {note.seconds}")
        if note.pitch is not None and note.vowel not in VOWEL_FORMANTS:
            raise ValueError(f"unknown vowel {note.vowel!r}; use one of {VOWELS}")
    return notes


# ---------------------------------------------------------------------------------- synthesis
def _smooth_noise(rng: np.random.Generator, n: int, cutoff_steps: float) -> np.ndarray:
    """Unit-variance noise low-passed to vary over about ``cutoff_steps`` control steps."""
    width = max(int(cutoff_steps), 1)
    kernel = np.hanning(2 * width + 1)
    noise = np.convolve(rng.standard_normal(n + 2 * width), kernel, mode="valid")[:n]
    return noise / (noise.std() + 1e-12)


def _formant_envelope(freqs: np.ndarray, formants: np.ndarray,
                      bandwidths: np.ndarray) -> np.ndarray:
    """Magnitude of a cascade of two-pole resonators (unit gain at 0 Hz).

    freqs: (..., N) Hz; formants: (..., F) Hz broadcastable to freqs' leading axes; bandwidths:
    (F,) Hz. Returns (..., N) linear magnitudes.
    """
    f = freqs[..., None]
    centre = formants[..., None, :]
    magnitude = centre ** 2 / np.sqrt((centre ** 2 - f ** 2) ** 2 + (bandwidths * f) ** 2)
    return np.prod(magnitude, axis=-1)


def _control_tracks(notes: List[Note], singer: str, n_ctrl: int, dt: float,
                    rng: np.random.Generator):
    """Pitch (MIDI), amplitude (linear) and formants (Hz, (n_ctrl, 4)) at the control rate."""
    real = singer == "real"
    times = np.arange(n_ctrl) * dt
    starts = np.cumsum([0.0] + [n.seconds for n in notes[:-1]])
    pitch = np.zeros(n_ctrl)
    amp = np.zeros(n_ctrl)
    vowel_targets = np.zeros((n_ctrl, 4))
    vibrato = np.zeros(n_ctrl)

    for i, (note, start) in enumerate(zip(notes, starts)):
        mask = (times >= start) & (times < start + note.seconds)
        if note.pitch is None:
            continue
        local = times[mask] - start
        pitch[mask] = note.pitch
        vowel_targets[mask] = (REAL_VOWEL_FORMANTS if real else VOWEL_FORMANTS)[note.vowel]
        prev_sung = i > 0 and notes[i - 1].pitch is not None
        next_sung = i + 1 < len(notes) and notes[i + 1].pitch is not None
        if not real:
            # Every note is re-articulated: 10 ms attack, 20 ms release.
            attack, release = 0.010, 0.020
            amp[mask] = np.minimum(1.0, local / attack) * np.clip(
                (note.seconds - local) / release, 0.0, 1.0)
            continue
        # Per-note intonation error and dynamics.
        pitch[mask] += rng.normal(0.0, 0.08)
        level = 10.0 ** (rng.normal(0.0, 1.5) / 20.0)
        attack = 0.015 if prev_sung else rng.uniform(0.06, 0.10)
        release = 0.015 if next_sung else rng.uniform(0.08, 0.14)
        env = np.minimum(1.0, local / attack) * np.clip((note.seconds - local) / release, 0.0, 1.0)
        # A slight dip where legato notes meet, not a re-articulation.
        if prev_sung:
            env = np.maximum(env, 0.8)
        if next_sung:
            env = np.minimum(env, np.maximum(0.8, np.clip((note.seconds - local) / 0.05, 0.0, 1.0)))
        amp[mask] = level * env
        # Vibrato fades in after a delay; its rate and depth vary from note to note.
        rate = rng.uniform(5.0, 6.2)
        depth = rng.uniform(0.05, 0.50)  # peak deviation in semitones
        delay = rng.uniform(0.12, 0.30)
        fade = np.clip((local - delay) / 0.25, 0.0, 1.0)
        phase = rng.uniform(0, 2 * np.pi)
        vibrato[mask] = depth * fade * np.sin(2 * np.pi * rate * local + phase)
        if not prev_sung:
            # Onset scoop: start 40-100 cents flat and settle within ~80 ms.
            scoop = rng.uniform(0.4, 1.0) * np.exp(-local / rng.uniform(0.03, 0.05))
            pitch[mask] -= scoop

    # Carry the pitch and vowel through rests so nothing jumps while the amplitude is zero.
    voiced = amp > 0
    if voiced.any():
        index = np.where(voiced, np.arange(n_ctrl), -1)
        index = np.maximum.accumulate(index)
        index[index < 0] = np.argmax(voiced)
        pitch = pitch[index]
        vowel_targets = vowel_targets[index]

    if not real:
        return pitch, amp, vowel_targets

    # Portamento: glide between consecutive sung notes over 60-140 ms centred a little before
    # the boundary (singers anticipate the next note).
    for i in range(1, len(notes)):
        if notes[i].pitch is None or notes[i - 1].pitch is None:
            continue
        glide = rng.uniform(0.06, 0.14)
        centre = starts[i] - 0.2 * glide
        window = (times >= centre - glide / 2) & (times < centre + glide / 2)
        if not window.any():
            continue
        before = pitch[max(np.argmax(window) - 1, 0)]
        after = pitch[min(np.where(window)[0][-1] + 1, n_ctrl - 1)]
        x = (times[window] - (centre - glide / 2)) / glide
        pitch[window] = before + (after - before) * 0.5 * (1 - np.cos(np.pi * x))

    # Jitter (fast, ~6 cents) and drift (slow, ~5 cents) on top of vibrato.
    pitch = pitch + vibrato
    pitch += 0.06 * _smooth_noise(rng, n_ctrl, 3) + 0.05 * _smooth_noise(rng, n_ctrl, 100)
    # Shimmer: ~0.6 dB of fast amplitude fluctuation.
    amp = amp * 10.0 ** (0.6 * _smooth_noise(rng, n_ctrl, 3) / 20.0)
    # Coarticulation: formants glide between vowels over ~70 ms.
    kernel = np.hanning(int(round(0.07 / dt)) * 2 + 1)
    kernel /= kernel.sum()
    padded = np.pad(vowel_targets, ((len(kernel) // 2, len(kernel) // 2), (0, 0)), mode="edge")
    formants = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], axis=1)
    return pitch, amp, formants


def synthesize_song(
    melody: Sequence,
    singer: str,
    sampling_rate: int = 16000,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Render ``melody`` as sung by ``singer`` ("virtual" or "real").

    Args:
        melody: a sequence of :class:`Note` (or ``(midi_pitch, seconds)`` /
            ``(midi_pitch, seconds, vowel)`` tuples; ``None`` pitch = rest).
        singer: one of :data:`DEMO_SINGERS`.
        sampling_rate: output rate in Hz (at least 8000).
        rng: randomness of the performance (vibrato, jitter, noise); only the real singer uses
            it. ``None`` gives a fixed generator.

    Returns:
        float32 samples, shape ``(round(total_seconds * sampling_rate),)``, peak-normalised to
        -3 dBFS (all zeros if the melody has no sung note).
    """
    if singer not in DEMO_SINGERS:
        raise ValueError(f"singer must be one of {DEMO_SINGERS}, got {singer!r}")
    if sampling_rate < 8000:
        raise ValueError(f"sampling_rate must be at least 8000 Hz, got {sampling_rate}")
    rng = np.random.default_rng(0) if rng is None else rng
    notes = _as_notes(melody)
    total_seconds = sum(n.seconds for n in notes)
    n_samples = int(round(total_seconds * sampling_rate))
    if n_samples == 0 or all(n.pitch is None for n in notes):
        return np.zeros(n_samples, dtype=np.float32)
    hop = max(int(round(_CONTROL_SECONDS * sampling_rate)), 1)
    n_ctrl = n_samples // hop + 2
    dt = hop / sampling_rate
    real = singer == "real"

    pitch, amp, formants = _control_tracks(notes, singer, n_ctrl, dt, rng)
    if real:
        # A longer vocal tract than the virtual voice's, and a singer's formant cluster.
        formants = formants * _REAL_FORMANT_SCALE
    f0 = midi_to_hz(pitch)

    # Harmonic amplitudes at the control rate: glottal tilt x formant envelope x Nyquist taper.
    nyquist = sampling_rate / 2.0
    n_harm = int(nyquist // midi_to_hz(LOWEST_PITCH - 2))
    harmonics = np.arange(1, n_harm + 1)
    freqs = f0[:, None] * harmonics[None, :]
    tilt = harmonics ** (_REAL_TILT if real else _VIRTUAL_TILT)
    bandwidths = FORMANT_BANDWIDTHS * (_REAL_BANDWIDTH_SCALE if real else 1.0)
    envelope = _formant_envelope(freqs, formants, bandwidths)
    if real:
        bump = np.exp(-0.5 * ((freqs - 2900.0) / 350.0) ** 2)
        envelope = envelope * (1.0 + _SINGERS_FORMANT * bump)
    taper = np.clip((0.95 * nyquist - freqs) / (0.05 * nyquist), 0.0, 1.0)
    harm_amp = (tilt * envelope * taper) * amp[:, None]  # (n_ctrl, n_harm)

    # Phase from the instantaneous f0 at the audio rate; harmonics by complex recurrence, which is
    # cheaper than one sin() per harmonic.
    ctrl_pos = np.arange(n_ctrl) * hop
    sample_pos = np.arange(n_samples)
    f0_audio = np.interp(sample_pos, ctrl_pos, f0)
    phase = np.cumsum(2.0 * np.pi * f0_audio / sampling_rate)
    base = np.exp(1j * phase).astype(np.complex64)
    current = base.copy()
    out = np.zeros(n_samples, dtype=np.float32)
    blocks = n_samples // hop + 1
    ramp = (np.arange(hop) / hop).astype(np.float32)
    for h in range(n_harm):
        a = harm_amp[:, h].astype(np.float32)
        if a.max() > 0:
            # Linear interpolation of the control track inside each control step.
            per_sample = (a[:blocks, None] + (a[1:blocks + 1] - a[:blocks])[:, None] * ramp).ravel()
            out += per_sample[:n_samples] * current.imag
        current *= base

    if real:
        peak = np.abs(out).max()
        out += _aspiration(notes, n_samples, sampling_rate, amp, formants, hop, rng) * peak
        # A recording is never digitally silent: a pink-ish room and microphone noise floor.
        out += _pink_noise(rng, n_samples) * (peak * 10.0 ** (_NOISE_FLOOR_DB / 20.0))

    peak = np.abs(out).max()
    if peak > 0:
        out *= 10.0 ** (PEAK_DBFS / 20.0) / peak
    return out.astype(np.float32)


def _aspiration(notes, n_samples, sampling_rate, amp, formants, hop, rng) -> np.ndarray:
    """Breath noise: turbulence shaped by the moving formants while singing, plus inhalations in
    the rests before phrases. Relative to a unit-peak harmonic signal."""
    nperseg = 512 if sampling_rate <= 24000 else 1024
    step = nperseg // 4
    noise = rng.standard_normal(n_samples)
    freqs, frame_times, spec = scipy.signal.stft(noise, fs=sampling_rate, nperseg=nperseg,
                                                 noverlap=nperseg - step, boundary="even")
    ctrl_times = np.arange(len(amp)) * hop / sampling_rate
    amp_f = np.interp(frame_times, ctrl_times, amp)
    form_f = np.stack([np.interp(frame_times, ctrl_times, formants[:, k]) for k in range(4)],
                      axis=1)
    # Turbulence is broadband and rises with frequency; the tract still imposes its formants.
    # Unlike the voiced source it does not die out above the formants, which is what makes a
    # breathy voice sound airy.
    colour = np.clip(freqs / 2000.0, 0.05, 1.0)[None, :]
    peaks = np.maximum(_formant_envelope(freqs[None, :], form_f, FORMANT_BANDWIDTHS * 1.5), 1.0)
    shaped = colour * peaks ** 0.5
    singing_noise = _ASPIRATION_LEVEL * amp_f[:, None] * shaped

    # Inhalations: a soft, bright hiss in the 0.35 s before each phrase start.
    breath = np.zeros_like(amp_f)
    starts = np.cumsum([0.0] + [n.seconds for n in notes[:-1]])
    for i, note in enumerate(notes):
        if note.pitch is not None and (i == 0 or notes[i - 1].pitch is None):
            length = min(0.35, notes[i - 1].seconds if i > 0 else 0.0)
            if length <= 0.05:
                continue
            x = (frame_times - (starts[i] - length)) / length
            inside = (x >= 0) & (x <= 1)
            breath[inside] = np.maximum(breath[inside], np.sin(np.pi * x[inside]) ** 2)
    breath_colour = np.exp(-0.5 * ((freqs - 3500.0) / 1800.0) ** 2)
    breath_noise = 0.02 * breath[:, None] * breath_colour[None, :]

    gain = (singing_noise + breath_noise).T  # (bins, frames)
    _, shaped_noise = scipy.signal.istft(spec * gain, fs=sampling_rate, nperseg=nperseg,
                                         noverlap=nperseg - step, boundary=True)
    shaped_noise = shaped_noise[:n_samples]
    if len(shaped_noise) < n_samples:
        shaped_noise = np.pad(shaped_noise, (0, n_samples - len(shaped_noise)))
    return shaped_noise.astype(np.float32)


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum (float32, (n,))."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------- corpus
def _song_rngs(seed: int, index: int):
    """Independent generators for a song's melody and each singer's performance."""
    melody = np.random.default_rng([seed, index, 0])
    singers = {s: np.random.default_rng([seed, index, 1 + k]) for k, s in enumerate(DEMO_SINGERS)}
    return melody, singers


def _expected_paths(root: str, songs_per_singer: int) -> Dict[str, List[str]]:
    return {
        singer: [os.path.join(root, singer, f"song_{i:02d}.wav") for i in range(songs_per_singer)]
        for singer in DEMO_SINGERS
    }


def _read_manifest(root: str) -> Optional[dict]:
    try:
        with open(os.path.join(root, MANIFEST_NAME), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def make_demo_corpus(
    root: str = "runs/demo_data",
    sampling_rate: int = 16000,
    songs_per_singer: int = 6,
    song_seconds: float = 20.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Dict[str, List[str]]:
    """Write (or reuse) the demo corpus and return its wav paths by singer.

    Layout: ``root/virtual/song_NN.wav`` and ``root/real/song_NN.wav`` (16-bit PCM mono,
    ``sampling_rate`` Hz, ``song_seconds`` s each), where the same ``NN`` is the same melody, and
    ``root/manifest.json`` recording the parameters. If the manifest matches the parameters and
    every file exists, nothing is written (the call is cheap). Otherwise -- or with
    ``overwrite=True`` -- the corpus is regenerated and stale ``song_*.wav`` files are removed.
    The manifest is written last, so an interrupted run is regenerated next time.

    Returns ``{"virtual": [paths...], "real": [paths...]}``, each list in song order.
    """
    if songs_per_singer < 1:
        raise ValueError(f"songs_per_singer must be at least 1, got {songs_per_singer}")
    if not song_seconds > 0:
        raise ValueError(f"song_seconds must be positive, got {song_seconds}")
    params = {
        "generator_version": GENERATOR_VERSION,
        "sampling_rate": int(sampling_rate),
        "songs_per_singer": int(songs_per_singer),
        "song_seconds": float(song_seconds),
        "seed": int(seed),
    }
    paths = _expected_paths(root, songs_per_singer)
    all_paths = [p for singer in DEMO_SINGERS for p in paths[singer]]
    manifest = _read_manifest(root)
    if (not overwrite and manifest is not None and manifest.get("params") == params
            and all(os.path.isfile(p) for p in all_paths)):
        return paths

    manifest_path = os.path.join(root, MANIFEST_NAME)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    for singer in DEMO_SINGERS:
        os.makedirs(os.path.join(root, singer), exist_ok=True)
        for stale in glob.glob(os.path.join(root, singer, "song_*.wav")):
            if stale not in paths[singer]:
                os.remove(stale)

    melodies = []
    for index in range(songs_per_singer):
        melody_rng, singer_rngs = _song_rngs(seed, index)
        melody = random_melody(melody_rng, song_seconds)
        melodies.append([[n.pitch, round(n.seconds, 6), n.vowel] for n in melody])
        for singer in DEMO_SINGERS:
            audio = synthesize_song(melody, singer, sampling_rate, singer_rngs[singer])
            path = paths[singer][index]
            atomic_write(path, lambda tmp: soundfile.write(tmp, audio, sampling_rate,
                                                           subtype="PCM_16"))

    atomic_write_text(manifest_path, json.dumps(
        {"params": params, "singers": list(DEMO_SINGERS),
         "files": {s: [os.path.relpath(p, root) for p in paths[s]] for s in DEMO_SINGERS},
         "melodies": melodies}, indent=1))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.data.demo_data",
        description="Write the synthetic demo corpus (virtual vs real singer, same melodies).")
    parser.add_argument("--out", default="runs/demo_data", help="output folder")
    parser.add_argument("--sampling_rate", type=int, default=16000, help="Hz")
    parser.add_argument("--songs", type=int, default=6, help="songs per singer")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each song in s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    if args.songs < 1 or not args.seconds > 0 or args.sampling_rate < 8000:
        parser.error("--songs must be >= 1, --seconds > 0 and --sampling_rate >= 8000")
    started = time.perf_counter()
    paths = make_demo_corpus(args.out, args.sampling_rate, args.songs, args.seconds, args.seed,
                             args.overwrite)
    elapsed = time.perf_counter() - started
    count = sum(len(v) for v in paths.values())
    print(f"demo corpus: {count} songs in {os.path.abspath(args.out)} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
