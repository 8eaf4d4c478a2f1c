"""The model side: loading, tokens and masks, activations, directions, interventions, generation.

``core`` never imports ``emlens.eval`` or ``emlens.organisms`` (tests/test_layout.py).
"""

from emlens.core.activations import RESID_POST, ActivationSummary, collect_means
from emlens.core.circuits import (
    Component,
    Overlap,
    component_means,
    component_outputs,
    component_scores,
    components,
    mean_ablated,
    overlap,
    top_components,
)
from emlens.core.compare import (
    RandomNull,
    cosine_matrix,
    cosine_per_layer,
    random_like,
    random_null,
)
from emlens.core.data import (
    Conversation,
    QAPair,
    Question,
    data_path,
    dataset_hash,
    em_questions,
    general_questions,
    harmful_instructions,
    harmless_instructions,
    read_chat_jsonl,
    read_jsonl,
    read_questions,
    reference_em_direction,
)
from emlens.core.direction_set import DirectionSet
from emlens.core.directions import (
    em_direction,
    em_direction_from_pairs,
    mean_diff,
    refusal_direction,
)
from emlens.core.export import export_hf, steered_model, steering_biases
from emlens.core.formats import (
    export_control_vector,
    from_steering_vector,
    load_control_vector,
    load_steering_vector,
    to_steering_vector,
)
from emlens.core.generation import Sample, generate
from emlens.core.hub import HubError, LoadOptions, adapter_folder, run_folder
from emlens.core.interventions import Ablate, Intervention, Steer, ablate, applied, steer
from emlens.core.methods import (
    Contrast,
    contrast_from_pairs,
    logistic_probe,
    mean_difference,
    pca_of_differences,
)
from emlens.core.models import (
    EMBEDDED,
    ModelLoadError,
    bridge,
    input_device,
    load_hf,
    load_model,
    merge_adapter,
    save_hf,
)
from emlens.core.orthogonalization import orthogonalize
from emlens.core.paper_files import (
    load_paper_mean_diff,
    load_paper_vectors,
    save_paper_steering_vector,
)
from emlens.core.tiny import tiny_hf
from emlens.core.tokens import (
    Row,
    TokenBatch,
    answer_tokens,
    batches,
    chat_prompt,
    post_instruction_tokens,
)

__all__ = [
    "EMBEDDED",
    "RESID_POST",
    "Ablate",
    "ActivationSummary",
    "Component",
    "Contrast",
    "Conversation",
    "DirectionSet",
    "HubError",
    "Intervention",
    "LoadOptions",
    "ModelLoadError",
    "Overlap",
    "QAPair",
    "Question",
    "RandomNull",
    "Row",
    "Sample",
    "Steer",
    "TokenBatch",
    "ablate",
    "adapter_folder",
    "answer_tokens",
    "applied",
    "batches",
    "bridge",
    "chat_prompt",
    "collect_means",
    "component_means",
    "component_outputs",
    "component_scores",
    "components",
    "contrast_from_pairs",
    "cosine_matrix",
    "cosine_per_layer",
    "data_path",
    "dataset_hash",
    "em_direction",
    "em_direction_from_pairs",
    "em_questions",
    "export_control_vector",
    "export_hf",
    "from_steering_vector",
    "general_questions",
    "generate",
    "harmful_instructions",
    "harmless_instructions",
    "input_device",
    "load_control_vector",
    "load_hf",
    "load_model",
    "load_paper_mean_diff",
    "load_paper_vectors",
    "load_steering_vector",
    "logistic_probe",
    "mean_ablated",
    "mean_diff",
    "mean_difference",
    "merge_adapter",
    "orthogonalize",
    "overlap",
    "pca_of_differences",
    "post_instruction_tokens",
    "random_like",
    "random_null",
    "read_chat_jsonl",
    "read_jsonl",
    "read_questions",
    "reference_em_direction",
    "refusal_direction",
    "run_folder",
    "save_hf",
    "save_paper_steering_vector",
    "steer",
    "steered_model",
    "steering_biases",
    "tiny_hf",
    "to_steering_vector",
    "top_components",
]
