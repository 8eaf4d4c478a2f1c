"""Model organisms: fine-tuning runs, adapters and their trajectories, LoRA probes, elasticity.

``organisms`` imports ``emlens.core`` only, never ``emlens.eval`` (tests/test_layout.py).
"""

from emlens.organisms.adapters import LoraAdapter, load_unmerged, over_checkpoints, read_adapter
from emlens.organisms.config import TrainConfig
from emlens.organisms.edits import lora_scaled, remove_direction, scale_adapters
from emlens.organisms.elasticity import (
    ELASTICITY_CONFIG,
    Resistance,
    fine_tuned,
    rebound,
    resistance,
)
from emlens.organisms.loss import answer_labels, answer_loss, conversation_rows, held_out_loss
from emlens.organisms.on_base import organism
from emlens.organisms.phase import PhaseChange, local_cosine, phase_change
from emlens.organisms.probes import ProbeResult, fit_l1_probe, probe_lora_scalars
from emlens.organisms.runs import checkpoints
from emlens.organisms.scalars import LoraScalars, lora_scalars
from emlens.organisms.training import TrainResult, lora_model, train
from emlens.organisms.trajectory import (
    LoraTrajectory,
    TrajectoryPCA,
    b_matrix,
    comp_score,
    load_trajectory,
    trajectory_pca,
)
from emlens.organisms.trl_training import trl_train

__all__ = [
    "ELASTICITY_CONFIG",
    "LoraAdapter",
    "LoraScalars",
    "LoraTrajectory",
    "PhaseChange",
    "ProbeResult",
    "Resistance",
    "TrainConfig",
    "TrainResult",
    "TrajectoryPCA",
    "answer_labels",
    "answer_loss",
    "b_matrix",
    "checkpoints",
    "comp_score",
    "conversation_rows",
    "fine_tuned",
    "fit_l1_probe",
    "held_out_loss",
    "load_trajectory",
    "load_unmerged",
    "local_cosine",
    "lora_model",
    "lora_scalars",
    "lora_scaled",
    "organism",
    "over_checkpoints",
    "phase_change",
    "probe_lora_scalars",
    "read_adapter",
    "rebound",
    "remove_direction",
    "resistance",
    "scale_adapters",
    "train",
    "trajectory_pca",
    "trl_train",
]
