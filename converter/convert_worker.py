"""Runs in a subprocess (the TFLite converter can crash the interpreter): Keras .h5 -> full-int8 .tflite.

python -m converter.convert_worker MODEL.h5 REPRESENTATIVE.npy OUT.tflite [--float]
"""

from __future__ import annotations

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str]) -> int:
    import numpy as np
    import tensorflow as tf

    from converter import models

    keras_path, rep_path, out_path = argv[:3]
    as_float = "--float" in argv
    trained = models.keras().models.load_model(keras_path, compile=False)
    # The converter needs a fixed batch of one (the device classifies one window at a time).
    shape, n_classes, unroll = tuple(trained.input_shape[1:]), int(trained.output_shape[-1]), "--fused" not in argv
    ensemble = models.parse_ensemble(trained.name)
    if ensemble:
        clip = models.cell_clip_of(trained.get_layer("member0"))
        fixed = models.build_ensemble(
            ensemble[0], shape, n_classes, ensemble[1], batch_size=1, unroll=unroll, cell_clip=clip
        )
    else:
        clip = models.cell_clip_of(trained)
        fixed = models.build(trained.name, shape, n_classes, batch_size=1, unroll=unroll, cell_clip=clip)
    fixed.set_weights(trained.get_weights())
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if not as_float:
        rep = np.load(rep_path).astype(np.float32)

        def representative() -> object:
            for window in rep:
                yield [window[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    data = converter.convert()
    # An unrolled recurrence has hundreds of intermediate tensors, and their names (a path per step) were
    # a third of the file. The device finds its input and output by index, so the names and the
    # signature go; the parity check that follows runs on exactly these bytes.
    from tensorflow.lite.tools import flatbuffer_utils

    stripped = flatbuffer_utils.convert_bytearray_to_object(data)
    flatbuffer_utils.strip_strings(stripped)
    data = flatbuffer_utils.convert_object_to_bytearray(stripped)
    with open(out_path, "wb") as f:
        f.write(data)
    print(f"tensorflow {tf.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
