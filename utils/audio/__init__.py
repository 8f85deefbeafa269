"""The signal layer: audio files and the STFT (``signal``), the model's features and their
normalisation (``features``), and the WORLD vocoder's analysis and synthesis (``world``).

Imports the foundation only (``common_definitions``, ``utils.errors``, ``utils.files``).
"""
