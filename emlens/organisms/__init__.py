"""Model organisms: fine-tuning runs, adapters and their trajectories, LoRA probes, elasticity.

``organisms`` imports ``emlens.core`` only, never ``emlens.eval`` (tests/test_layout.py).
"""
