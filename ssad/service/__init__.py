"""What the app does, without the web page: which models exist (``models``), one detection turned into
pictures at display size (``detection``), and bounded training of a session model (``training``).

``app.py`` only wires these functions to Gradio components; everything here is plain Python and works
for every method in the registry, so a newly registered method appears without app changes.
"""

from ssad.hub import HUB_REPO, HUB_REVISION
from ssad.service.detection import (
    ANIMATION_PANEL, DISPLAY_MAX, MASK_LABEL, Detection, animation, calibration_sentence, details_markdown, detect,
    empty_mask_reason, frame_picture, full_resolution_map, mask_annotation, mask_share, overlay,
    reconstruction_pair, verdict_sentence,
)
from ssad.service.models import (
    USUAL_MODELS, Availability, SessionModels, availability, availability_table, current_device, default_method,
    default_model, display_names, get_model, model_choices, models_with_weights, on_device, public_path,
)
from ssad.service.training import (
    SESSION_RECIPE, SelfCheck, StagedProgress, TrainingLimits, calibration_warning, collect_training_images,
    held_out_count, remember, self_check, session_sizes, stage_plan, train_session_model, training_config,
)

__all__ = [
    "ANIMATION_PANEL", "DISPLAY_MAX", "MASK_LABEL", "Detection", "animation", "calibration_sentence", "details_markdown",
    "detect", "empty_mask_reason", "frame_picture", "full_resolution_map", "mask_annotation",
    "mask_share", "overlay", "reconstruction_pair", "verdict_sentence",
    "HUB_REPO", "HUB_REVISION", "USUAL_MODELS", "Availability", "SessionModels", "availability", "availability_table",
    "current_device", "default_method", "default_model", "display_names", "get_model", "model_choices",
    "models_with_weights", "on_device", "public_path", "SESSION_RECIPE", "SelfCheck", "StagedProgress",
    "TrainingLimits", "calibration_warning", "collect_training_images", "held_out_count", "remember", "self_check", "session_sizes",
    "stage_plan", "train_session_model", "training_config",
]
