"""Songs on disk: the records folder a run trains on (``records``, ``records_writer``, their shards
in ``shards`` and the WORLD features cached beside them in ``world_cache``), folders of songs read
directly for inference (``song_folders``), the bundled demo corpus (``demo_data``) and parallel
songs, two singers' renditions of a melody paired by name and aligned (``parallel``).

Imports the foundation and ``utils.audio``; ``data_loader.py`` is its command line and entry point.
"""
