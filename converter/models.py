"""The recurrent model families compared by `steth train`.

Built with the legacy Keras (tf-keras): full-integer int8 conversion of an LSTM works through that
path and crashes through Keras 3. Callers must import this module before TensorFlow is imported
anywhere, or set TF_USE_LEGACY_KERAS=1 themselves.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

ARCHITECTURES = ("simplernn", "lstm", "conv_lstm")
DOMAIN_SOURCES = ("rnn", "conv")  # where the database head may read (TrainSettings.domain_from)
DESCRIPTIONS = {
    "simplernn": "SimpleRNN(64) over the MFCC frames, dense softmax",
    "lstm": "LSTM(64) over the MFCC frames, dense softmax",
    "conv_lstm": "two strided Conv1D(32, k=5) layers and a max-pool (8x shorter sequence, local S1/S2 shapes) "
    "then LSTM(48)",
}


@functools.cache
def keras() -> Any:
    import tf_keras

    _clipped_cell_class(tf_keras)  # registered before any model file that holds one is loaded
    return tf_keras


@functools.cache  # one class, registered once
def _clipped_cell_class(k: Any) -> Any:
    import tensorflow as tf

    class ClippedLSTMCell(k.layers.LSTMCell):
        """An LSTM cell whose cell state stays within +-``clip`` (tanh(4) = 0.9993: beyond 4 a state says
        nothing more through the output gate).

        Why it exists: int8 conversion unrolls the recurrence and stores the cell state in int8 at every
        step, on a range calibrated to its largest value; the screening LSTM's state reached |c| 18-19,
        and the int8 model's probabilities came out 0.027 lower than the float one's. Clipped at 4, the
        state's int8 step is ~0.03 instead of ~0.15. Tried once (session 14,
        docs/screening_all_sources/ensemble): the shift stayed (0.022), so the state's range is not its
        cause. Kept as a setting, off by default, for the next look at it."""

        def __init__(self, units: int, clip: float = 4.0, **kwargs: Any) -> None:
            super().__init__(units, **kwargs)
            self.clip = float(clip)

        def _compute_carry_and_output(self, x: Any, h_tm1: Any, c_tm1: Any) -> Any:
            c, o = super()._compute_carry_and_output(x, h_tm1, c_tm1)
            return tf.clip_by_value(c, -self.clip, self.clip), o

        def _compute_carry_and_output_fused(self, z: Any, c_tm1: Any) -> Any:
            c, o = super()._compute_carry_and_output_fused(z, c_tm1)
            return tf.clip_by_value(c, -self.clip, self.clip), o

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "clip": self.clip}

    # the legacy .h5 format names the RNN layer's cell by its bare class name
    k.utils.get_custom_objects()["ClippedLSTMCell"] = ClippedLSTMCell
    return ClippedLSTMCell


def _lstm(units: int, unroll: bool, cell_clip: float, lstm_l2: float = 0.0) -> Any:
    """The recurrent layer: Keras' LSTM, or (``cell_clip`` > 0) the same cell with its state clipped.
    ``lstm_l2`` > 0 puts weight decay on its input and recurrent kernels. Tried once (session 14,
    docs/screening_all_sources/ensemble, L2 1e-4): the int8 model's shift against the float one fell from
    -0.027 to -0.006 and parity passed (99.3%). The gate pre-activations' extremes grew, though, so why it
    helps is open."""
    k = keras()
    reg = (
        {"kernel_regularizer": k.regularizers.l2(lstm_l2), "recurrent_regularizer": k.regularizers.l2(lstm_l2)}
        if lstm_l2 > 0
        else {}
    )
    if cell_clip > 0:
        return k.layers.RNN(_clipped_cell_class(k)(units, clip=cell_clip, **reg), name="rnn", unroll=unroll)
    return k.layers.LSTM(units, name="rnn", unroll=unroll, **reg)


def cell_clip_of(model: Any) -> float:
    """The cell clip of a model's recurrent layer (0: none), so conversion rebuilds the same graph."""
    for layer in model.layers:
        if layer.name == "rnn":
            return float(getattr(getattr(layer, "cell", None), "clip", 0.0))
    return 0.0


def build(
    arch: str,
    input_shape: tuple[int, int],
    n_classes: int,
    batch_size: int | None = None,
    dropout: float = 0.25,
    unroll: bool = False,
    domains: int = 0,
    reversal: float = 0.3,
    domain_from: str = "rnn",
    cell_clip: float = 0.0,
    lstm_l2: float = 0.0,
) -> Any:
    """A compiled-ready model; ``batch_size=1`` gives the fixed-batch graph the int8 converter needs.

    ``unroll=True`` (for conversion) spells the recurrence out step by step. TFLite's fused int8 LSTM
    kernel quantises the gates and cell state coarsely and disagreed with the float model on ~5% of
    recordings; unrolled, every gate is an ordinary int8 op with its own calibrated range (mean window
    probability error 0.013 instead of 0.024, max 0.11 instead of 0.65) and it runs faster, at the cost
    of a larger file.

    ``domains > 0`` adds a second output for training only: a head that tries to tell which database a
    window came from, behind a gradient reversal layer (Ganin & Lempitsky 2015). The shared layers
    are thereby pushed away from whatever identifies the stethoscope and site. Callers keep only the
    label branch (:func:`label_branch`), so the shipped graph and its conversion are unchanged.
    """
    k = keras()
    layers = k.layers
    inp = layers.Input(shape=input_shape, batch_size=batch_size, name="features")
    x = inp
    if arch == "simplernn":
        x = layers.SimpleRNN(64, name="rnn", unroll=unroll)(x)
    elif arch == "lstm":
        x = _lstm(64, unroll, cell_clip, lstm_l2)(x)
    elif arch == "conv_lstm":
        x = layers.Conv1D(32, 5, strides=2, padding="same", activation="relu", name="conv1")(x)
        x = layers.Conv1D(32, 5, strides=2, padding="same", activation="relu", name="conv2")(x)
        # 26 steps of 40 ms instead of 51 of 20 ms: half the unrolled int8 graph (the file is mostly
        # per-step ops, not weights), and fewer steps for quantisation error to accumulate over.
        x = layers.MaxPooling1D(2, name="pool")(x)
        conv_features = x
        x = _lstm(48, unroll, cell_clip, lstm_l2)(x)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if domain_from not in DOMAIN_SOURCES:
        raise ValueError(f"domain_from={domain_from!r}: one of {', '.join(DOMAIN_SOURCES)}")
    shared = x
    if domains > 0 and domain_from == "conv":
        if arch != "conv_lstm":
            raise ValueError(f"domain_from='conv' needs the conv_lstm architecture, not {arch!r}")
        # the head reads the convolutional front end (averaged over time), so what identifies the
        # stethoscope is pushed out before the recurrent layer rather than after it
        shared = layers.GlobalAveragePooling1D(name="domain_pool")(conv_features)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(32, activation="relu", name="hidden")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    if domains <= 0:
        return k.Model(inp, out, name=arch)
    d = GradientReversal(reversal, name="reverse")(shared)
    d = layers.Dense(32, activation="relu", name="domain_hidden")(d)
    d = layers.Dense(domains, activation="softmax", name="domain")(d)
    return k.Model(inp, [out, d], name=arch)


ENSEMBLE_TAG = "_ensemble"


def ensemble_name(arch: str, members: int) -> str:
    return f"{arch}{ENSEMBLE_TAG}{members}"


def parse_ensemble(name: str) -> tuple[str, int] | None:
    """(architecture, members) of a model named by :func:`ensemble_name`, else None."""
    arch, tag, n = name.rpartition(ENSEMBLE_TAG)
    return (arch, int(n)) if tag and n.isdigit() else None


def build_ensemble(
    arch: str,
    input_shape: tuple[int, int],
    n_classes: int,
    members: int,
    batch_size: int | None = None,
    unroll: bool = False,
    cell_clip: float = 0.0,
) -> Any:
    """One graph that runs ``members`` copies of ``arch`` on the same window and averages their class
    probabilities. Shipped as one int8 TFLite file, so the device, its feature pipeline and the parity
    check see one model; its weights are the members' in order (``set_weights`` of each member)."""
    k = keras()
    inp = k.layers.Input(shape=input_shape, batch_size=batch_size, name="features")
    outs = []
    for i in range(members):
        m = build(arch, input_shape, n_classes, batch_size=batch_size, unroll=unroll, cell_clip=cell_clip)
        m._name = f"member{i}"  # nested models need distinct names in one graph
        outs.append(m(inp))
    return k.Model(inp, k.layers.Average(name="probabilities")(outs), name=ensemble_name(arch, members))


def label_branch(model: Any) -> Any:
    """The classifier alone (input -> probabilities) of a model built with ``domains``: what ships."""
    k = keras()
    return k.Model(model.input, model.get_layer("probabilities").output, name=model.name)


@functools.cache  # one class, not a new one per model built
def _gradient_reversal_class() -> Any:
    import tensorflow as tf

    k = keras()

    class _GradientReversal(k.layers.Layer):  # type: ignore[name-defined]
        """Identity forward; gradient times ``-factor`` backward."""

        def __init__(self, factor: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.factor = float(factor)

        def call(self, x: Any) -> Any:
            factor = self.factor

            @tf.custom_gradient
            def reverse(v: Any) -> Any:
                return tf.identity(v), lambda g: -factor * g

            return reverse(x)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "factor": self.factor}

    return _GradientReversal


def GradientReversal(factor: float, **kwargs: Any) -> Any:  # noqa: N802 - used like a layer class
    return _gradient_reversal_class()(factor, **kwargs)
