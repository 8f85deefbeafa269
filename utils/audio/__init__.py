"""The signal layer: audio files and the STFT (``signal``), the model's features and their
normalisation (``features``), the WORLD vocoder's analysis and synthesis (``world``), and the
mel-cepstra of spectral envelopes with the time alignment of two renditions (``mel_cepstrum``).

Imports the foundation only (``common_definitions``, ``utils.errors``, ``utils.files``).
"""
