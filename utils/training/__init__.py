"""What the Trainer (``pipeline.py``) is built from: the strategy and its collectives
(``distribute``), the warm-up Adam (``optimizer``), low-precision steps (``precision``), the data
and held-out songs a run trains on, settled up front (``data``, ``validation``), the step's
metrics (``metrics``), its reports (``reports``: TensorBoard, progress bar, output wavs) and
Ctrl-C / SIGTERM handling (``stop_signals``).

The top of ``utils``: imports any lower package and ``model`` and ``data_loader``. Nothing in
inference (``migrate.py``, ``evaluate.py``, ``export.py``, the notebooks, ``utils.runs``,
``utils.migration``) imports it.
"""
