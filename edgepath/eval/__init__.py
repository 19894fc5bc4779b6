"""Shared evaluation: stain and scanner domains, PLISM pair metrics, robustness and fidelity runs,
embedding of tile arrays, and the description of the machine a measurement ran on.

This layer sits below the stages (distill, quantize, export, embed) and ``bench``, which all use
it; it imports only the core modules, ``models``, ``runtime`` and ``slides``.
"""
