"""Audio I/O and the STFT with its inverses.

Loading: any ``.wav .mp3 .flac .ogg`` file (8/16/24/32-bit integer or float samples, any rate, any
channel count) is decoded with soundfile (libsndfile), with audioread as the fallback for files
libsndfile rejects, downmixed to mono and resampled to ``Config.sampling_rate`` with soxr (a
band-limited resampler). Nothing is cut to whole seconds.

STFT (the ``spectrogram`` feature's transform): ``log(|STFT| + log_floor)`` (natural log of a
linear amplitude), frames x bins. Periodic Hann window of ``n_fft`` samples, hop
``hop_length``, FFT size ``n_fft``. A song of ``N`` samples has ``1 + ceil(N / hop_length)``
frames centred on samples ``0, hop, 2 hop, ...`` (zeros outside the song), so every sample, edges
included, lies between two frame centres (see :func:`stft`). The inverse divides the
overlap-added frames by the overlap-added squared window *per sample* (not by its steady-state
value), which is what makes the edges exact. Griffin-Lim inverts a magnitude without a phase.

The model's features (patches, whole songs, their normalisation) are in :mod:`utils.audio.features`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import stat
from typing import Optional, Tuple

import numpy as np
import soundfile as sf
import soxr
import tensorflow as tf

from common_definitions import Config
from utils.errors import SinGlowError, one_line
from utils.files import atomic_write

# A file whose peak amplitude stays at or below this (-80 dBFS) holds nothing to learn from: it
# is digital silence, or at most the dither of a silent 16-bit recording.
SILENCE_PEAK = 1e-4

# Truncation tolerance for formats whose declared length is an estimate (mp3 without a gapless
# header): two MPEG frames or 1 %, whichever is larger.
_TRUNCATION_SLACK_FRAMES = 2 * 1152
_TRUNCATION_SLACK_FRACTION = 0.01

# WAV writers that stream write a placeholder data size (0xFFFFFFFF and the like) and never fix
# it; such a file is complete, not truncated.
_WAV_PLACEHOLDER_SIZE = 0x7FFF0000
_WAV_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)

_READ_BLOCK = 1 << 20  # frames per read: a bogus header cannot make us allocate its claim at once


class AudioError(SinGlowError, ValueError):
    """A file or signal that cannot be used; the message is a one-line reason."""


class TooShortError(AudioError):
    """Usable audio, but shorter than one patch (a decision that depends on the Config)."""


# ---------------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level stderr: libmpg123 prints resync notes that would break one-line reports."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (e.g. some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_soundfile(path: str) -> Tuple[np.ndarray, int]:
    # Bytes, because soundfile cannot encode a str name holding bytes that are not UTF-8.
    name = os.fsencode(path) if os.name == "posix" else path
    with _quiet_stderr(), sf.SoundFile(name) as handle:
        rate, declared = handle.samplerate, handle.frames
        blocks = []
        while True:
            block = handle.read(_READ_BLOCK, dtype="float32", always_2d=True)
            if not len(block):
                break
            blocks.append(block)
        log = handle.extra_info
        channels = handle.channels
    data = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
    # libsndfile quietly shortens a WAV whose data chunk runs past the end of the file; its
    # header log is the only place that says so.
    match = _WAV_DATA_SIZE.search(log or "")
    if match and _WAV_PLACEHOLDER_SIZE > int(match.group(1)) > int(match.group(2)):
        claimed, held = int(match.group(1)), int(match.group(2))
        raise AudioError(
            f"truncated: the header declares {claimed} data bytes, the file holds {held}")
    slack = max(_TRUNCATION_SLACK_FRAMES, int(_TRUNCATION_SLACK_FRACTION * declared))
    if 0 < declared < 1 << 40 and len(data) < declared - slack:
        raise AudioError(
            f"truncated: decoded {len(data) / rate:.2f} s of the {declared / rate:.2f} s "
            "the header declares"
        )
    return data, rate


def _read_audioread(path: str) -> Tuple[np.ndarray, int]:
    import audioread  # imported lazily: only needed for the rare file libsndfile rejects

    with audioread.audio_open(path) as handle:
        rate, channels = handle.samplerate, handle.channels
        raw = b"".join(handle)
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return pcm.reshape(-1, channels), rate


def _decode(path: str) -> Tuple[np.ndarray, int]:
    """Samples ``(frames, channels)`` float32 in [-1, 1] (float files may exceed it), and rate."""
    try:
        return _read_soundfile(path)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as err:
        primary = one_line(err)
    try:
        return _read_audioread(path)
    except Exception:  # the fallback's own complaint is less telling than libsndfile's
        pass
    # libsndfile reports an unparsable .mp3 as "does not exist or is not a regular file".
    if "does not exist" in primary and os.path.isfile(path):
        primary = "not a recognised audio format"
    primary = re.sub(r"^Error opening .*['\"]: ", "", primary)  # the caller names the file
    primary = re.sub(r"^Error\s*:\s*", "", primary).rstrip(".")
    raise AudioError(f"cannot decode: {primary}")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def load_audio(path: str, sampling_rate: int) -> np.ndarray:
    """Decode ``path`` to mono float32 samples at ``sampling_rate`` Hz.

    Channels are averaged; the rate is converted with soxr's high-quality band-limited
    resampler. The output has ``round(frames * sampling_rate / file_rate)`` samples (nothing is
    cut to whole seconds) and is never clipped, so full-scale clipping in the file survives.

    Raises:
        AudioError: with a one-line reason: not a regular file (a FIFO, socket or device is
            never opened), unreadable or empty file, undecodable or truncated data, no
            samples, or non-finite samples (located in seconds of the file).
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO, socket or device named like a song: opening it could block for ever.
            raise AudioError(f"not a regular file ({_file_kind(info.st_mode)}), not read")
        size = info.st_size
        with open(path, "rb"):  # a permission problem reads better as itself than as a codec error
            pass
    except OSError as err:
        raise AudioError(f"cannot read: {one_line(err.strerror or err)}") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        data, rate = _decode(path)
    except MemoryError:
        raise AudioError("cannot decode: does not fit in memory") from None
    if not data.size:
        raise AudioError("no audio samples (empty or truncated)")
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise AudioError(f"non-finite samples at {first / rate:.2f} s")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_audio(samples: np.ndarray, config: Config) -> None:
    """Raise :class:`AudioError` unless ``samples`` (1-D, at ``config.sampling_rate``) are usable.

    Usable means: every sample finite, a peak above :data:`SILENCE_PEAK` (-80 dBFS), and at least
    ``config.patch_samples`` samples. Clipped (full-scale) audio is usable.
    """
    samples = np.asarray(samples)
    rate = config.sampling_rate
    finite = np.isfinite(samples)
    if not finite.all():
        raise AudioError(f"non-finite samples at {int(np.argmin(finite)) / rate:.2f} s")
    if not samples.size or float(np.max(np.abs(samples))) <= SILENCE_PEAK:
        raise AudioError("silent")
    if samples.shape[-1] < config.patch_samples:
        raise TooShortError(
            f"shorter than one patch ({samples.shape[-1] / rate:.2f} s < "
            f"{config.patch_samples / rate:.2f} s)"
        )


def save_wav(path: str, samples: np.ndarray, sampling_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono ``samples`` (float, [-1, 1]) as a WAV file, whole or not at all.

    ``subtype`` is ``"PCM_16"`` (default) or ``"FLOAT"``. Samples are clipped to [-1, 1], NaN is
    written as 0 and +-inf as +-1, so a generated signal never produces an unreadable file. The
    file is written beside ``path`` and renamed over it, so an interrupted write leaves any earlier
    file at ``path`` untouched and no truncated wav behind.
    """
    samples = np.clip(np.nan_to_num(np.asarray(samples, np.float32).reshape(-1), nan=0.0), -1, 1)
    # Encoded in memory first: libsndfile reports a full disk only as "System error", a plain
    # file write says ENOSPC (see utils.files.WriteFailed). atomic_write's temporary file is a
    # plain name (not mkstemp's private 0600 file), so the wav gets the usual permissions.
    encoded = io.BytesIO()
    sf.write(encoded, samples, int(sampling_rate), subtype=subtype, format="WAV")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(encoded.getbuffer())

    atomic_write(path, write)


# ---------------------------------------------------------------------------------- STFT
def _window(config: Config) -> tf.Tensor:
    return tf.signal.hann_window(config.n_fft, periodic=True)


def num_frames(num_samples: int, config: Config) -> int:
    """Frames of the centred STFT of ``num_samples`` samples: ``1 + ceil(N / hop_length)``."""
    return 1 + -(-num_samples // config.hop_length)


def stft(samples, config: Config, center: bool = True) -> tf.Tensor:
    """Complex STFT ``[..., frames, n_fft // 2 + 1]`` of real ``samples [..., N]``.

    Periodic Hann window of ``n_fft`` samples, hop ``hop_length``, FFT size ``n_fft``.

    ``center=True`` (whole songs): frame ``f`` is centred on sample ``f * hop_length``, for
    ``f = 0 .. ceil(N / hop)`` (:func:`num_frames`), the signal being zero outside ``[0, N)``. So
    every sample lies between two frame centres, where some window is large, whatever the hop;
    this is librosa's ``center=True, pad_mode="constant"`` STFT of the signal zero-extended to a
    whole number of hops (identical to it when ``N`` is a multiple of ``hop_length``).

    ``center=False`` (training patches): frames start at sample 0 and ``1 + (N - n_fft) // hop``
    of them fit.
    """
    samples = tf.convert_to_tensor(samples, tf.float32)
    if center:
        left = config.n_fft // 2
        right = config.n_fft - left + tf.math.floormod(-tf.shape(samples)[-1], config.hop_length)
        paddings = [[0, 0]] * (samples.shape.rank - 1) + [[left, right]]
        samples = tf.pad(samples, paddings)
    return tf.signal.stft(
        samples, config.n_fft, config.hop_length, fft_length=config.n_fft,
        window_fn=tf.signal.hann_window, pad_end=False,
    )


def check_invertible(config: Config) -> None:
    """Raise a one-line ``ValueError`` unless spectrograms of ``config`` can be turned back into
    audio (:func:`istft`, Griffin-Lim): the hop must be below ``n_fft``."""
    if config.hop_length >= config.n_fft:
        raise ValueError(
            f"hop_length ({config.hop_length}) must be below n_fft ({config.n_fft}) for the "
            "Hann-windowed STFT to be invertible (a Hann window is 0 at its first sample)"
        )


def istft(spec, config: Config, num_samples, center: bool = True) -> tf.Tensor:
    """Inverse of :func:`stft`: samples ``[..., num_samples]`` from ``spec [..., frames, bins]``.

    Overlap-add of the windowed inverse FFTs divided, sample by sample, by the overlap-added
    squared window (librosa's ``istft`` normalisation), so the result equals the STFT's input at
    every sample, edges included, to float32 precision. Output past the frames' reach is zero.
    """
    check_invertible(config)
    spec = tf.convert_to_tensor(spec)
    window = _window(config)
    frames = tf.signal.irfft(spec, fft_length=[config.n_fft]) * window
    signal = tf.signal.overlap_and_add(frames, config.hop_length)
    count = tf.shape(spec)[-2]
    squares = tf.tile((window * window)[None], [count, 1])
    norm = tf.signal.overlap_and_add(squares, config.hop_length)
    tiny = np.finfo(np.float32).tiny
    signal = signal / tf.where(norm > tiny, norm, tf.ones_like(norm))
    start = config.n_fft // 2 if center else 0
    num_samples = tf.cast(num_samples, tf.int32)
    signal = signal[..., start:start + num_samples]
    missing = tf.maximum(num_samples - tf.shape(signal)[-1], 0)
    paddings = [[0, 0]] * (signal.shape.rank - 1) + [[0, missing]]
    return tf.pad(signal, paddings)


def log_magnitude(samples, config: Config, center: bool = True) -> tf.Tensor:
    """``log(|STFT| + log_floor)`` in nats of linear amplitude, ``[..., frames, bins]`` float32."""
    return tf.math.log(tf.abs(stft(samples, config, center)) + config.log_floor)


def spectrogram(samples, config: Config) -> Tuple[tf.Tensor, tf.Tensor]:
    """Whole-signal features: ``(log_mag, phase)``, each ``[frames, bins]`` float32.

    ``log_mag = log(|STFT| + config.log_floor)``; ``phase`` in radians. Uses the centred STFT, so
    :func:`spectrogram_to_audio` returns ``samples`` exactly, edges included.
    """
    spec = stft(samples, config, center=True)
    return tf.math.log(tf.abs(spec) + config.log_floor), tf.math.angle(spec)


def magnitude(log_mag, config: Config) -> tf.Tensor:
    """Linear STFT magnitude from ``log_mag``; a value below ``log(log_floor)`` gives 0."""
    log_mag = tf.convert_to_tensor(log_mag, tf.float32)
    return tf.nn.relu(tf.exp(log_mag) - config.log_floor)


def spectrogram_to_audio(log_mag, phase, config: Config, num_samples: int) -> tf.Tensor:
    """Exact inverse of :func:`spectrogram`: samples ``[num_samples]`` float32."""
    mag = magnitude(log_mag, config)
    phase = tf.convert_to_tensor(phase, tf.float32)
    spec = tf.complex(mag * tf.cos(phase), mag * tf.sin(phase))
    return istft(spec, config, num_samples)


@dataclasses.dataclass(frozen=True)
class StftShape:
    """The two Config fields the STFT reads (stands in for a Config), so a traced function is
    keyed by them alone."""

    n_fft: int
    hop_length: int


@tf.function(reduce_retracing=True)
def _griffin_lim_loop(mag, angles, num_samples, n_iter, momentum, n_fft, hop_length):
    config = StftShape(n_fft, hop_length)
    mag = tf.cast(mag, tf.complex64)
    spec = mag * angles
    previous = tf.zeros_like(spec)
    tiny = np.finfo(np.float32).tiny
    for _ in tf.range(n_iter):
        rebuilt = stft(istft(spec, config, num_samples), config)
        rebuilt.set_shape(spec.shape)
        # "Fast Griffin-Lim" (Perraudin et al., 2013): extrapolate from the previous projection;
        # previous is 0 on the first pass, as in librosa.
        estimate = rebuilt - tf.cast(momentum / (1.0 + momentum), tf.complex64) * previous
        spec = mag * (estimate / tf.cast(tf.abs(estimate) + tiny, tf.complex64))
        previous = rebuilt
    return istft(spec, config, num_samples)


def griffin_lim(
    log_mag,
    config: Config,
    num_samples: int,
    n_iter: Optional[int] = None,
    momentum: float = 0.99,
    seed: Optional[int] = None,
) -> tf.Tensor:
    """Samples ``[num_samples]`` whose STFT magnitude approximates ``magnitude(log_mag)``.

    The fast Griffin-Lim of librosa (``librosa.griffinlim`` with ``center=True``,
    ``pad_mode="constant"``, ``init="random"``) on this module's STFT, with the same random
    initial phases for the same ``seed`` (default ``config.seed``): for ``num_samples`` a multiple
    of ``hop_length``, where the two STFTs coincide, they agree to float32 round-off (tested).
    ``log_mag`` is ``[frames, bins]`` with ``frames == num_frames(num_samples)``.
    """
    check_invertible(config)
    log_mag = tf.convert_to_tensor(log_mag, tf.float32)
    frames, bins = log_mag.shape[-2], log_mag.shape[-1]
    if frames != num_frames(int(num_samples), config) or bins != config.n_bins:
        raise ValueError(
            f"log_mag has shape {tuple(log_mag.shape)}, but {num_samples} samples give "
            f"{num_frames(int(num_samples), config)} frames of {config.n_bins} bins"
        )
    n_iter = config.griffin_lim_iters if n_iter is None else int(n_iter)
    rng = np.random.default_rng(config.seed if seed is None else seed)
    # librosa draws the phases bins-major; drawing the same array keeps the two in step.
    turns = rng.random(size=tuple(log_mag.shape[:-2]) + (bins, frames))
    turns = np.swapaxes(turns, -1, -2)
    angles = tf.constant(np.exp(2j * np.pi * turns).astype(np.complex64))
    return _griffin_lim_loop(
        magnitude(log_mag, config), angles, tf.constant(int(num_samples), tf.int32),
        tf.constant(n_iter, tf.int32), tf.constant(momentum, tf.float32),
        config.n_fft, config.hop_length,
    )
