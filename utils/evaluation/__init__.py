"""Judges and measures of songs: SNR, spectral distance, pitch and the per-second singer classifier
(``metrics``), the frame-level judge (``frame_judge``), the mel-cepstral distance to a target
singer's own rendition (``distance``) and spectrogram figures (``plots``).

Works on samples and arrays only: imports the foundation and ``utils.audio`` (``distance``: WORLD
and mel-cepstra).
"""
