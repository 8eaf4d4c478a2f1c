"""Evaluation: the papers' judge, EM rate, log-prob metrics, statistics, sweeps, the server.

``eval`` imports ``emlens.core`` only, never ``emlens.organisms`` (tests/test_layout.py).
"""
