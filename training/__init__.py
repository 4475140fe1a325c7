"""Training: the surrogate-task model, its losses and loop, and loading a trained run.

Needs the ``train`` extra (torch). Importing this package does not import torch; the
modules ``model``, ``losses``, ``train``, ``checkpoint`` and ``infer`` do.
"""
