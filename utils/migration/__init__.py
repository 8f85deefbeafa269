"""Migration: moving a song toward a reference, or converting it to another singer.

One family of methods, each a small class with one interface (``method``): fitted once, to a
reference's statistics or to the checkpoint, then applied to a song at a strength. The latent
moves ``midpoint``, ``shift`` and ``match`` (``latent_moves``), the no-model baseline ``eq``
(``eq_baseline``, with the per-bin statistics it moves toward in ``bin_stats``) and a conditional
checkpoint's ``convert`` (``convert``) are listed in one registry (``registry``) that
``migrate.py``, ``evaluate.py`` and the notebooks read. The rendering steps a method composes (the
source's harmonics kept below a band, a change rendered on the source) are in ``rendering``, over
the arithmetic of ``harmonic_band``; a ``migrate.py`` run's statistics are in ``targets`` and its
folder mode in ``folders``.

Imports the foundation, ``utils.audio``, ``utils.data`` and ``utils.runs``; never training code.
The registry and the method classes import no TensorFlow when they load (what needs it is
imported when a song is processed), so a command line builds and checks its flags first.
"""
