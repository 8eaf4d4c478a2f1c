"""The model side: loading, tokens and masks, activations, directions, interventions, generation.

``core`` never imports ``emlens.eval`` or ``emlens.organisms`` (tests/test_layout.py).
"""
