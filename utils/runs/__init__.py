"""A trained run: its checkpoint folder (``run_folder``, ``checkpoint_files``) and the inference
object it loads into (``codec``: whole-song encode / decode / transform and latent statistics),
with the two things the Codec is made of: whole songs in segments and chunks (``song_chunks``)
and the latent statistics of songs (``latent_stats``, what migration moves toward; here because
the Codec computes them).

Imports the foundation, ``utils.audio``, ``utils.data`` and ``model`` (the run folder builds the
Glow it restores); no training code, so ``migrate.py``, ``evaluate.py`` and the notebooks load a
run through :func:`utils.runs.run_folder.load_for_inference` alone.
"""
