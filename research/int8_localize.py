"""Where in a conv_lstm screening model does int8 shift the probability? Stage by stage, float head after.

    python -m research.int8_localize MODEL.h5 WINDOWS.npy

MODEL.h5 is one trained conv_lstm (not an average); WINDOWS.npy holds feature windows from development
recordings (e.g. `converter.convert.representative_windows` of them, saved with numpy): the first 3,000
calibrate the int8 conversion, the last 400 are scored.

For each stage (the conv front end's pool, the LSTM's output, the hidden layer, the probabilities) the
graph up to that stage is converted to int8 on its own; its dequantised output goes through the FLOAT
rest of the model, and the probability is compared with the float model's. The stage where the shift
appears is where it is made. Then, in float, the LSTM is run with only int8's output limits on its
activations (tanh at most 127/128, sigmoid at most 255/256), to see whether those limits alone make it.

Session 14 (docs/screening_all_sources/ensemble/README.md): the shift appears at the LSTM (front end
+0.001, LSTM -0.015, head nothing more), and the activation limits alone move the probability by < 0.001.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np


def _int8(model: Any, calib: np.ndarray) -> Any:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    conv = tf.lite.TFLiteConverter.from_keras_model(model)

    def rep() -> Any:
        for w in calib:
            yield [w[None]]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    it = Interpreter(model_content=conv.convert())
    it.allocate_tensors()
    return it


def _run(it: Any, x: np.ndarray) -> np.ndarray:
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (s, z), (out_s, out_z) = i["quantization"], o["quantization"]
    out = []
    for w in x:
        it.set_tensor(i["index"], np.clip(np.round(w[None] / s + z), -128, 127).astype(np.int8))
        it.invoke()
        out.append((it.get_tensor(o["index"])[0].astype(np.float32) - out_z) * out_s)
    return np.array(out)


def _softmax_positive(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray((e / e.sum(axis=1, keepdims=True))[:, 1])


def limits_only(model: Any, k: Any, windows: np.ndarray, tanh_max: float, sigmoid_max: float) -> np.ndarray:
    """P(positive) with the float LSTM whose tanh and sigmoid outputs are capped as int8's are."""
    x = k.Model(model.input, model.get_layer("pool").output).predict(windows, verbose=0)
    w, u_mat, b = model.get_layer("rnn").get_weights()
    u = u_mat.shape[0]
    h, c = np.zeros((len(x), u)), np.zeros((len(x), u))

    def sig(v: np.ndarray) -> np.ndarray:
        return np.asarray(np.minimum(1 / (1 + np.exp(-v)), sigmoid_max))

    def th(v: np.ndarray) -> np.ndarray:
        return np.asarray(np.minimum(np.tanh(v), tanh_max))

    for step in range(x.shape[1]):
        z = x[:, step] @ w + h @ u_mat + b
        c = sig(z[:, u : 2 * u]) * c + sig(z[:, :u]) * th(z[:, 2 * u : 3 * u])
        h = sig(z[:, 3 * u :]) * th(c)
    hw, hb = model.get_layer("hidden").get_weights()
    ow, ob = model.get_layer("probabilities").get_weights()
    return _softmax_positive(np.maximum(h @ hw + hb, 0) @ ow + ob)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("windows", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from converter import models

    k = models.keras()
    trained = k.models.load_model(args.model, compile=False)
    fixed = models.build("conv_lstm", tuple(trained.input_shape[1:]), 2, batch_size=1, unroll=True)
    fixed.set_weights(trained.get_weights())
    windows = np.load(args.windows).astype(np.float32)
    calib, scored = windows[:3000], windows[-400:]
    p_float = fixed.predict(scored, batch_size=1, verbose=0)[:, 1]
    names = [layer.name for layer in fixed.layers]
    for stage in ("pool", "rnn", "hidden", "probabilities"):
        sub = k.Model(fixed.input, fixed.get_layer(stage).output)
        q = _run(_int8(sub, calib), scored)
        if stage == "probabilities":
            p = q[:, 1]
        else:  # the float rest of the model on the int8 stage's output
            x_in = k.Input(batch_shape=sub.output.shape)
            x = x_in
            for layer in fixed.layers[names.index(stage) + 1 :]:
                x = layer(x)
            p = k.Model(x_in, x).predict(q.reshape((len(q), *sub.output.shape[1:])), batch_size=1, verbose=0)[:, 1]
        shift, spread = np.mean(p - p_float), np.mean(abs(p - p_float))
        print(f"int8 up to {stage:13s}: probability shift {shift:+.4f}, mean |d| {spread:.4f}")
    p_lstm = limits_only(trained, k, scored, 1.0, 1.0)
    for tanh_max, sig_max, what in ((127 / 128, 1.0, "tanh <= 127/128"), (1.0, 255 / 256, "sigmoid <= 255/256")):
        p = limits_only(trained, k, scored, tanh_max, sig_max)
        print(f"float LSTM, {what:18s}: probability shift {np.mean(p - p_lstm):+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
