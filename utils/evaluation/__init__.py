"""Judges and measures of songs: SNR, spectral distance, pitch and the per-second singer classifier
(``metrics``), the frame-level judge (``frame_judge``) and spectrogram figures (``plots``).

Works on samples and arrays only: imports the foundation and nothing else of the project.
"""
