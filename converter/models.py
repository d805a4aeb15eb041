"""The recurrent model families compared by `steth train`.

Built with the legacy Keras (tf-keras): full-integer int8 conversion of an LSTM works through that
path and crashes through Keras 3. Callers must import this module before TensorFlow is imported
anywhere, or set TF_USE_LEGACY_KERAS=1 themselves.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

ARCHITECTURES = ("simplernn", "lstm", "conv_lstm")
DESCRIPTIONS = {
    "simplernn": "SimpleRNN(64) over the MFCC frames, dense softmax",
    "lstm": "LSTM(64) over the MFCC frames, dense softmax",
    "conv_lstm": "two strided Conv1D(32, k=5) layers and a max-pool (8x shorter sequence, local S1/S2 shapes) "
    "then LSTM(48)",
}


def keras() -> Any:
    import tf_keras

    return tf_keras


def build(
    arch: str,
    input_shape: tuple[int, int],
    n_classes: int,
    batch_size: int | None = None,
    dropout: float = 0.25,
    unroll: bool = False,
) -> Any:
    """A compiled-ready model; ``batch_size=1`` gives the fixed-batch graph the int8 converter needs.

    ``unroll=True`` (for conversion) spells the recurrence out step by step. TFLite's fused int8 LSTM
    kernel quantises the gates and cell state coarsely and disagreed with the float model on ~5% of
    recordings; unrolled, every gate is an ordinary int8 op with its own calibrated range (mean window
    probability error 0.013 instead of 0.024, max 0.11 instead of 0.65) and it runs faster, at the cost
    of a larger file.
    """
    k = keras()
    layers = k.layers
    inp = layers.Input(shape=input_shape, batch_size=batch_size, name="features")
    x = inp
    if arch == "simplernn":
        x = layers.SimpleRNN(64, name="rnn", unroll=unroll)(x)
    elif arch == "lstm":
        x = layers.LSTM(64, name="rnn", unroll=unroll)(x)
    elif arch == "conv_lstm":
        x = layers.Conv1D(32, 5, strides=2, padding="same", activation="relu", name="conv1")(x)
        x = layers.Conv1D(32, 5, strides=2, padding="same", activation="relu", name="conv2")(x)
        # 26 steps of 40 ms instead of 51 of 20 ms: half the unrolled int8 graph (the file is mostly
        # per-step ops, not weights), and fewer steps for quantisation error to accumulate over.
        x = layers.MaxPooling1D(2, name="pool")(x)
        x = layers.LSTM(48, name="rnn", unroll=unroll)(x)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(32, activation="relu", name="hidden")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return k.Model(inp, out, name=arch)
