"""The flow's parts: its layers (``layers``), their thin convolutions as GEMMs (``ops``) and the
TensorFlow Probability view of a Glow (``bijector``), and the first layer of a parallel model, the
per-frame normalisation given the source's frames (``context_norm``); ``model.py`` assembles them.

Imports nothing from the project but its own modules (and, for ``bijector``, a Glow passed in).
"""
