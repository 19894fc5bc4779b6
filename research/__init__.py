"""Experiments and their scripts (``python -m research.NAME``); not part of the edgepath package."""
