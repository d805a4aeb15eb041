"""The model-runtime seam: a TFLite interpreter from LiteRT, or a fallback where LiteRT is missing."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from device.core.errors import ModelError

log = logging.getLogger(__name__)


def interpreter(model_path: Path, num_threads: int = 1) -> Any:
    """An allocated interpreter for ``model_path``; LiteRT first, then tflite_runtime, then TensorFlow."""
    candidates = (
        ("ai_edge_litert.interpreter", "Interpreter"),
        ("tflite_runtime.interpreter", "Interpreter"),
        ("tensorflow.lite", "Interpreter"),
    )
    # LiteRT logs "Created TensorFlow Lite XNNPACK delegate" to stderr on every load: noise for a nurse.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    errors = []
    for module_name, attr in candidates:
        try:
            module = __import__(module_name, fromlist=[attr])
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        try:
            interp = getattr(module, attr)(model_path=str(model_path), num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{model_path}: not a loadable TFLite model ({exc})", "reinstall the package") from exc
        if module_name != candidates[0][0]:
            log.warning("LiteRT (ai-edge-litert) not installed; running %s with %s", model_path.name, module_name)
        return interp
    raise ModelError(
        "no TFLite runtime found (" + "; ".join(errors) + ")",
        "install the device extra: pip install 'stethoscope-edge[device]'",
    )
