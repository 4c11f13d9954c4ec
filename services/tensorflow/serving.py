"""TensorFlow's serving formats, as TensorFlow recommends them: a SavedModel written by Keras'
`model.export` (what TensorFlow Serving loads), and a TFLite flatbuffer converted from it by
`tf.lite.TFLiteConverter` and run by LiteRT's interpreter (ai-edge-litert), the runtime that
replaces the deprecated `tf.lite.Interpreter`.

The exports run in the training worker (TensorFlow imported, the model in memory); the loaders run
in a fresh process (services/common/deploy.py) that imports only what serving the format needs,
so this module imports no framework at its top.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from services.common.deploy import Format

TFLITE_MODEL = "model.tflite"


def formats(model) -> list[Format]:
    """The formats of the trained Keras `model`."""
    import tensorflow as tf

    def export_savedmodel(directory: Path) -> None:
        # The serving signature takes float32 NHWC images with any batch size.
        model.export(str(directory), format="tf_saved_model", verbose=False)

    def export_tflite(directory: Path) -> None:
        # TFLite's converter starts from a SavedModel: both are part of this format's export time.
        with tempfile.TemporaryDirectory() as saved:
            model.export(saved, format="tf_saved_model", verbose=False)
            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
        (directory / TFLITE_MODEL).write_bytes(flatbuffer)

    return [
        Format(
            "savedmodel",
            export_savedmodel,
            "services.tensorflow.serving:load_savedmodel",
            ("tensorflow",),
        ),
        Format(
            "tflite",
            export_tflite,
            "services.tensorflow.serving:load_tflite",
            ("ai_edge_litert.interpreter",),
        ),
    ]


def load_savedmodel(directory: Path, device: str):
    import tensorflow as tf

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    for gpu in tf.config.list_physical_devices("GPU") if device != "cpu" else ():
        # As the trainer: without growth TensorFlow takes almost all GPU memory at start.
        tf.config.experimental.set_memory_growth(gpu, True)
    # Serve in strict fp32, as the trained model's reference outputs are computed.
    tf.config.experimental.enable_tensor_float_32_execution(False)
    # friction: the loaded object must outlive its signature, or its variables are deleted
    # under the function that reads them.
    loaded = tf.saved_model.load(str(directory))

    def predict(images: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(images)).numpy()

    return predict, f"tf.saved_model.load (tensorflow {tf.__version__})", device


def load_tflite(directory: Path, device: str):
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    # Set, not left to LiteRT's default: the other runtimes use every core they may.
    threads = len(os.sched_getaffinity(0))
    interpreter = Interpreter(model_path=str(directory / TFLITE_MODEL), num_threads=threads)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()

    def predict(images: np.ndarray) -> np.ndarray:
        # The batch dimension is dynamic: the tensors are resized when it changes.
        if tuple(interpreter.get_input_details()[0]["shape"]) != images.shape:
            interpreter.resize_tensor_input(source["index"], images.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    runtime = f"LiteRT {ai_edge_litert.__version__} interpreter, {threads} threads (CPU)"
    # LiteRT's GPU delegate is for mobile GPUs: on a server it runs on the CPU.
    return predict, runtime, "cpu"
