"""Everything the entry points share, in packages by concern.

The modules directly here are the few that every layer uses and that build on no other package:
``errors`` (the one error base class), ``files`` (the one atomic write and audio-folder walker),
``cli`` (the one runner and exit-code convention), ``locks`` (one writer per folder) and
``resources`` (memory and disk checks before any work). With ``common_definitions`` they are the
foundation; they import nothing from the packages below.

The packages, from the bottom up (each imports only its own layer or lower ones; ``python
design/make_module_figure.py --check`` verifies it):

    audio                         the signal: audio files, the STFT, the model's features, WORLD
    flow   data   evaluation      the flow's layers; records and song folders; judges and figures
    (model.py, data_loader.py)
    runs                          a trained run's folder and the inference object (Codec)
    migration                     the family of migration methods and what runs them
    training                      what the Trainer (pipeline.py) is built from

Inference (``migrate.py``, ``evaluate.py``, ``export.py``, the notebooks, ``runs`` and
``migration``) never imports ``training`` nor ``pipeline``.
"""
