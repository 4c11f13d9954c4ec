"""TensorFlow trainer: `model.compile` + `model.fit` on a tf.data pipeline, the way Keras users
train.

tf.data cuts the shared batch schedule on the CPU (where Keras input pipelines run) and prefetches
it; one dataset spans every epoch and `steps_per_epoch` tells fit where epochs end, so the
pipeline keeps running across epoch boundaries. A callback turns Keras' batch and epoch hooks into
the recorder's calls. What Keras does around the steps and the evaluation (metric resets, iterator
and validation set-up, log conversion) is left out of train and eval time, so it shows up as
between-epoch overhead.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets, deploy, harness, injection, model_report, numerics, schedule
from services.common.spec import WEIGHT_DECAY, SpecError
from services.tensorflow import models, serving

FRAMEWORK = "tensorflow"
# friction: torch.optim.Adam/AdamW's epsilon; Keras defaults to 1e-7. (Keras adds it to sqrt(v)
# before the bias correction, PyTorch after: a difference of order epsilon, left as it is.)
ADAM_EPSILON = 1e-8
MIXED_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def describe() -> pb.DescribeResponse:
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    return pb.DescribeResponse(
        framework=FRAMEWORK,
        framework_version=tf.__version__,
        python_version=platform.python_version(),
        cuda_version=build.get("cuda_version", ""),
        cudnn_version=build.get("cudnn_version", ""),
        devices=["cpu", *(f"cuda:{i} {gpu_name(gpu)}" for i, gpu in enumerate(gpus))],
        library_versions={"keras": keras.__version__, "numpy": np.__version__},
        hostname=platform.node(),
    )


def gpu_name(gpu: tf.config.PhysicalDevice) -> str:
    return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)


def resolve_device(name: str, count: int = 1) -> tf.config.PhysicalDevice | None:
    """Makes only the spec's devices visible (before TensorFlow's runtime starts, which is the
    only time it can be set): the first GPU, or the first `count` in data parallel; or, on the
    CPU in data parallel, `count` logical CPU devices made of it. Returns the first GPU that
    trains, or None for the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if name == "cpu" or (name == "auto" and not gpus):
        # friction: hidden rather than avoided with tf.device: Keras places variables on any
        # visible GPU.
        tf.config.set_visible_devices([], "GPU")
        if count > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            logical = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            tf.config.set_logical_device_configuration(cpu, logical)
        return None
    if not gpus:
        build = (
            f"built for CUDA {tf.sysconfig.get_build_info()['cuda_version']}: it needs an NVIDIA "
            "driver and the CUDA libraries of services/tensorflow/requirements-gpu.txt"
            if tf.test.is_built_with_cuda()
            else "a build without CUDA support"
        )
        raise SpecError(
            "device: 'cuda' was requested but TensorFlow sees no GPU "
            f"(tensorflow {tf.__version__}, {build}); use device 'cpu' or 'auto'"
        )
    if len(gpus) < count:
        raise SpecError(
            f"gpus: {count} GPUs asked for, but TensorFlow sees {len(gpus)}; use gpus "
            f"{len(gpus)} or fewer"
        )
    tf.config.set_visible_devices(gpus[:count], "GPU")
    for gpu in gpus[:count]:
        # friction: without growth TensorFlow reserves almost all GPU memory at start, and memory
        # numbers mean nothing. TF_FORCE_GPU_ALLOW_GROWTH=false in the service's environment
        # overrides.
        tf.config.experimental.set_memory_growth(gpu, True)
    return gpus[0]


def mirrored_strategy(gpu: tf.config.PhysicalDevice | None, count: int):
    """Keras' data parallelism over `count` devices of one host (the GPUs, or the logical CPU
    devices that resolve_device made), or None for one device. fit splits every batch of the
    dataset into `count` consecutive parts, device d taking the d-th (tf.distribute's rebatching):
    schedule.device_rows' rule; the gradients are summed across devices of losses Keras divides
    by their number, and BatchNorm is synchronised (synchronise_batchnorm)."""
    if count == 1:
        return None
    devices = tf.config.list_logical_devices("GPU" if gpu else "CPU")[:count]
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def synchronise_batchnorm(model: keras.Model) -> None:
    """Every BatchNormalization of the model takes its batch statistics over the global batch, as
    one device's would: Keras' `synchronized` BatchNorm all-reduces them across the replicas of a
    tf.distribute strategy (it reads the flag when called, so library models take it too)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def configure(spec: pb.TrainSpec, gpu: tf.config.PhysicalDevice | None) -> dict[str, str]:
    """Applies the spec's speed/precision knobs and returns them as resolved, for the results."""
    keras.utils.set_random_seed(spec.seed)
    # friction: TensorFlow uses TF32 on Ampere+ by default, for matmuls and convolutions (XLA too),
    # one switch for all: native leaves it as it ships, every other precision sets it.
    tf32 = numerics.tf32_switches(spec.precision)
    if tf32 is not None:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    tf32_enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    # Set before the model is built: layers take their compute dtype from the global policy.
    policy = MIXED_POLICIES.get(spec.precision, "float32")
    keras.mixed_precision.set_global_policy(policy)
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    settings = {
        "device": "cuda:0" if gpu else "cpu",
        "precision": spec.precision,
        **numerics.tf32_settings(
            tf32_enabled,
            tf32_enabled,
            tf.config.experimental.get_device_details(gpu)["compute_capability"] if gpu else None,
        ),
        "mixed_precision_policy": policy,
        # Keras' compile wraps the optimizer in a LossScaleOptimizer under mixed_float16.
        "loss_scale": "dynamic" if spec.precision == "fp16" else "none",
        # friction: Keras' own default (jit_compile="auto") would turn XLA on for a GPU: the spec
        # decides.
        "compile": "xla (jit_compile)" if xla(spec) else "tf.function graph, no xla",
        "mode": spec.mode,
        "steps_per_execution": str(schedule.steps_per_execution(spec.mode)),
        "cudnn_benchmark": "always (TensorFlow autotunes)",
        "weight_decay": WEIGHT_DECAY[spec.optimizer.name],
        "input_pipeline": "tf.data on the CPU, parallel map, prefetch autotuned",
        # 0 means TensorFlow's default: one thread per schedulable core.
        "threads": str(threads or len(os.sched_getaffinity(0))),
    }
    if gpu:
        settings["memory_growth"] = os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return settings


class Pipeline:
    """The dataset in host memory and the batches of the shared schedule, cut by tf.data.

    The arrays are tf.Variables on the CPU, not tensors: a tf.data function captures a tensor as a
    constant embedded in its graph (the 150 MB training set serialised into the function, and up
    against GraphDef's 2 GB limit), while a variable is captured as a resource handle that
    `tf.gather` reads in place, one batch at a time.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        batch_size: int,
        num_classes: int,
        inject: injection.Injection | None = None,
    ):
        self.batch_size = batch_size
        self.num_classes = num_classes
        # A debug probe's layout of the batches fed to the model (none in every measured run).
        self.inject = inject or injection.Injection(pb.TrainSpec())
        self.train_samples = len(dataset.train_labels)
        self.test_samples = len(dataset.test_labels)
        pad = schedule.PAD
        with tf.device("/CPU:0"):
            # Padded once, so that every crop is a pure gather.
            padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
            padded = tf.pad(np.asarray(dataset.train_images), padding)
            # friction: variables, not tensors: tf.data would embed a tensor in its graph.
            self.train_padded = tf.Variable(padded, trainable=False)
            self.train_labels = tf.Variable(np.asarray(dataset.train_labels), trainable=False)
            self.test_images = tf.Variable(np.asarray(dataset.test_images), trainable=False)
            self.test_labels = tf.Variable(np.asarray(dataset.test_labels), trainable=False)
        self.mean = tf.constant(dataset.mean, tf.float32)
        self.std = tf.constant(dataset.std, tf.float32)
        self.arange = tf.range(schedule.SIZE, dtype=tf.int64)

    @staticmethod
    def plan_array(plan: schedule.EpochPlan) -> np.ndarray:
        """int64 [4, N]: the plan's order, dy, dx and flip, one tensor for tf.data to carry."""
        return np.stack([plan.order, plan.dy, plan.dx, plan.flip.astype(np.int64)])

    def set_epoch(self, plan: schedule.EpochPlan) -> None:
        """The epoch that augmented() and the next iteration of train_dataset() cut."""
        self.plan = self.plan_array(plan)

    def augmented(self, k: int) -> tf.Tensor:
        """Batch k of the epoch set by set_epoch as uint8 NHWC, after crop and flip: what
        training uses, for comparing with the other frameworks' pipelines."""
        return self._augmented(tf.constant(self.plan), k)

    def _augmented(self, plan: tf.Tensor, k) -> tf.Tensor:
        part = plan[:, k * self.batch_size : (k + 1) * self.batch_size]
        order, dy, dx, flip = tf.unstack(part)
        rows, cols = schedule.crop_indices(dy, dx, flip, self.arange)
        images = tf.gather(self.train_padded, order)
        images = tf.gather(images, rows, axis=1, batch_dims=1)
        return tf.gather(images, cols, axis=2, batch_dims=1)

    def _normalise(self, images: tf.Tensor) -> tf.Tensor:
        return (tf.cast(images, tf.float32) / 255 - self.mean) / self.std

    def _train_batch(self, plan: tf.Tensor, k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        order = plan[0, k * self.batch_size : (k + 1) * self.batch_size]
        labels = tf.gather(self.train_labels, order)
        return self._normalise(self._augmented(plan, k)), tf.one_hot(labels, self.num_classes)

    def train_dataset(self) -> tf.data.Dataset:
        """One epoch's batches: each iteration of this dataset cuts the epoch that set_epoch set
        last (the shared NumPy schedule's plan, one Python call per epoch, never per batch).

        One finite dataset that fit iterates afresh every epoch, as Keras users write it, rather
        than one dataset of every epoch with fit's steps_per_epoch: with steps_per_execution > 1
        Keras takes whole executions from that one iterator, so an epoch whose steps are not a
        multiple of it would take the next epoch's first batches (and the last epoch would run
        short). A finite epoch ends every execution at its own last batch.
        """
        steps = schedule.steps_per_epoch(self.train_samples, self.batch_size)
        plans = tf.data.Dataset.from_generator(
            lambda: iter([self.plan]),
            output_signature=tf.TensorSpec((4, self.train_samples), tf.int64),
        )
        batches = plans.flat_map(lambda plan: tf.data.Dataset.range(steps).map(lambda k: (plan, k)))
        train_batch = self.inject.batches(self._train_batch, "NHWC", tf.transpose)
        return (
            batches.map(train_batch, num_parallel_calls=tf.data.AUTOTUNE)
            # Known, so that Keras counts an epoch's executions instead of running into its end.
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE)
        )

    def _test_batch(self, k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        end = tf.minimum((k + 1) * self.batch_size, self.test_samples)
        part = tf.range(k * self.batch_size, end)
        images = self._normalise(tf.gather(self.test_images, part))
        return images, tf.one_hot(tf.gather(self.test_labels, part), self.num_classes)

    def test_dataset(self) -> tf.data.Dataset:
        steps = schedule.steps_per_epoch(self.test_samples, self.batch_size)
        return (
            tf.data.Dataset.range(steps)
            .map(self._test_batch, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )


def with_coupled_l2(optimizer_class: type, l2: float) -> type:
    """`optimizer_class` with weight decay as torch.optim.SGD and Adam apply it: l2 * w added to
    the gradient before the update. (Keras' own `weight_decay` is decoupled: it shrinks the weights
    apart from the gradient, as AdamW does.)"""

    # friction: Keras has no coupled (L2) weight decay; PyTorch's SGD and Adam have only that.
    class CoupledL2(optimizer_class):
        def apply(self, grads, trainable_variables=None):
            variables = (
                self._trainable_variables if trainable_variables is None else trainable_variables
            )
            grads = [
                g if g is None else g + l2 * tf.cast(v, g.dtype)
                for g, v in zip(grads, variables, strict=True)
            ]
            return super().apply(grads, trainable_variables)

    CoupledL2.__name__ = f"{optimizer_class.__name__}CoupledL2"
    return CoupledL2


def make_optimizer(spec: pb.TrainSpec, total_steps: int) -> keras.optimizers.Optimizer:
    o = spec.optimizer
    # Both schedules are per step; Keras' CosineDecay equals PyTorch's CosineAnnealingLR to 0.
    learning_rate = (
        keras.optimizers.schedules.CosineDecay(o.learning_rate, decay_steps=total_steps)
        if o.lr_schedule == "cosine"
        else o.learning_rate
    )
    if o.name == "adamw":
        return keras.optimizers.AdamW(
            learning_rate, weight_decay=o.weight_decay, epsilon=ADAM_EPSILON
        )
    if o.name == "sgd":
        optimizer_class = keras.optimizers.SGD
        options = {"momentum": o.momentum, "nesterov": o.nesterov}
    else:
        optimizer_class = keras.optimizers.Adam
        options = {"epsilon": ADAM_EPSILON}
    if o.weight_decay:
        optimizer_class = with_coupled_l2(optimizer_class, o.weight_decay)
    return optimizer_class(learning_rate, **options)


def outputs_probabilities(model: keras.Model) -> bool:
    """keras.applications models end in a softmax (their default classifier_activation); models
    that output logits, as PyTorch's do, need the loss's from_logits."""
    return getattr(model.layers[-1], "activation", None) is keras.activations.softmax


class EpochPlans(keras.callbacks.Callback):
    """Sets the pipeline's epoch before fit iterates the training dataset for it."""

    def __init__(self, pipeline: Pipeline, seed: int, augment: str):
        super().__init__()
        self._pipeline = pipeline
        self._seed = seed
        self._augment = augment

    def on_epoch_begin(self, epoch, logs=None):
        plan = schedule.epoch_plan(self._seed, epoch, self._pipeline.train_samples, self._augment)
        self._pipeline.set_epoch(plan)


class RecorderCallback(keras.callbacks.Callback):
    """Keras' hooks as recorder calls.

    Because this callback has a batch hook, Keras converts every batch's logs to Python floats
    before calling it, which waits for the device after every step (without one, Keras converts
    them on a thread pool and the loop never waits). Every Keras user with a batch callback pays
    this; on a GPU it costs the overlap of one step's host work with the previous step's kernels,
    which a run with only Keras' progress bar would keep.
    """

    def __init__(self, recorder, batch_size: int, train_samples: int):
        super().__init__()
        self._recorder = recorder
        self._batch_size = batch_size
        self._train_samples = train_samples
        self._steps_per_epoch = schedule.steps_per_epoch(train_samples, batch_size)

    def on_train_begin(self, logs=None):
        self._recorder.train_begin()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        # Keras' "loss" is the mean over the epoch so far; progress wants the mean since the last
        # report: kept as (samples, mean) at that report.
        self._reported = (0, 0.0)

    # friction: any batch hook makes Keras synchronise with the device after every step.
    def on_train_batch_end(self, batch, logs=None):
        # friction: with steps_per_execution Keras passes the execution's first step plus
        # steps_per_execution - 1, beyond the epoch's end for its last, shorter execution.
        step = min(batch + 1, self._steps_per_epoch)
        if self._recorder.step_end(self._epoch, step):
            samples = min(step * self._batch_size, self._train_samples)
            reported_samples, reported_mean = self._reported
            window_loss = (logs["loss"] * samples - reported_mean * reported_samples) / (
                samples - reported_samples
            )
            self._recorder.progress(self._epoch, step, window_loss)
            # Keras checks this after every step; the epoch's validation still runs, and the
            # recorder leaves that epoch out.
            self.model.stop_training = self._recorder.diverged
            self._reported = (samples, logs["loss"])
            # The epoch's last step always reports: the last of these ends training time.
            self._train_end = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        # The logs were converted to floats before this hook, so the device is done.
        self._test_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._recorder.epoch_end(
            epoch,
            train_loss=logs["loss"],
            train_accuracy=logs["accuracy"],
            test_loss=logs["val_cross_entropy"],
            test_accuracy=logs["val_accuracy"],
            train_time_s=self._train_end - self._epoch_start,
            eval_time_s=self._test_end - self._test_start,
        )


class Training:
    """One training run, in the order services/common/harness.py calls it: set up, load, build,
    then Keras' fit, with RecorderCallback as the recorder's hooks."""

    def __init__(self, spec: pb.TrainSpec, inject: injection.Injection):
        self.spec = spec
        self.inject = inject
        self.gpu = resolve_device(spec.device, spec.gpus)
        self.strategy = mirrored_strategy(self.gpu, spec.gpus)
        self.settings = configure(spec, self.gpu)
        self.settings["execution"] = (
            "keras fit, run_eagerly=True"
            if inject.eager
            else f"keras fit, tf.function{' + xla' if xla(spec) else ''}"
        )
        self.framework_version = tf.__version__
        self.device_name = gpu_name(self.gpu) if self.gpu else "cpu"
        self.cuda_device_index = 0 if self.gpu else None
        self.devices = self.strategy.num_replicas_in_sync if self.strategy else 1
        self.device_pids = [os.getpid()] * self.devices
        if self.strategy:
            self.settings["data_parallel"] = (
                f"tf.distribute.MirroredStrategy over {self.devices} "
                f"{'GPUs' if self.gpu else 'logical CPU devices'}; BatchNorm synchronized"
            )

    def load(self, dataset: datasets.Dataset) -> None:
        self.pipeline = Pipeline(
            dataset, self.spec.batch_size, self.spec.model.num_classes, self.inject
        )

    def build(self, model_spec: pb.ModelSpec, total_steps: int) -> None:
        # Variables made in a strategy's scope are mirrored on each of its devices, and fit
        # trains a model compiled there on all of them.
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            self.model = models.build(model_spec, self.spec.seed)
            if self.strategy:
                synchronise_batchnorm(self.model)
            from_logits = compile_for_training(
                self.model, self.spec, total_steps, with_metrics=True
            )
        self.settings["from_logits"] = str(from_logits).lower()

    def fit(self, recorder) -> None:
        if self.gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        spec = self.spec
        if self.strategy:
            # Under a strategy Keras builds the model from one batch of the dataset before the
            # first epoch begins (and before EpochPlans sets it): epoch 0's.
            plans = EpochPlans(self.pipeline, spec.seed, spec.data.augment)
            plans.on_epoch_begin(0)
        self.model.fit(
            self.pipeline.train_dataset(),
            epochs=spec.epochs,
            validation_data=self.pipeline.test_dataset(),
            # friction: the shared schedule has already shuffled; this only silences Keras'
            # warning.
            shuffle=False,
            callbacks=[
                EpochPlans(self.pipeline, spec.seed, spec.data.augment),
                RecorderCallback(recorder, spec.batch_size, self.pipeline.train_samples),
            ],
            # Our callback reports progress; Keras' progress bar would print to the service's
            # stdout.
            verbose=0,
        )

    def evaluate(self) -> tuple[float, np.ndarray]:
        # friction: Keras' evaluate returns only the metrics; the classes take predict, and the
        # loss Keras' own function over its outputs.
        outputs = self.model.predict(self.pipeline.test_dataset(), verbose=0)
        losses = keras.losses.sparse_categorical_crossentropy(
            self.pipeline.test_labels, outputs, from_logits=not outputs_probabilities(self.model)
        )
        return float(np.mean(losses)), np.asarray(outputs).argmax(-1)

    def canonical_weights(self) -> dict[str, np.ndarray]:
        return models.canonical_weights(self.model, self.spec.model)

    def peak_memory(self) -> dict[str, int]:
        if not self.gpu:
            return {}
        return {"peak_framework_mem_bytes": tf.config.experimental.get_memory_info("GPU:0")["peak"]}

    def test_predictions(self) -> np.ndarray:
        # friction: fit's validation keeps only its metrics; the classes take one more pass
        # over the test split (after training, in no timed phase).
        logits = self.model.predict(self.pipeline.test_dataset(), verbose=0)
        return np.asarray(logits).argmax(-1)

    def deployment(self, diverged: bool) -> pb.Deployment:
        """The trained model exported in TensorFlow's serving formats and measured, against its
        own eval-mode outputs in strict fp32 (services/common/deploy.py)."""
        tf.config.experimental.enable_tensor_float_32_execution(False)
        reference = np.asarray(self.model(deploy.probe(self.spec.seed), training=False), np.float32)
        device = "cuda:0" if self.gpu else "cpu"
        return deploy.measure(self.spec, serving.formats(self.model), reference, device, diverged)


def train(spec: pb.TrainSpec, recorder) -> None:
    harness.train(spec, recorder, Training)


def xla(spec: pb.TrainSpec) -> bool:
    """XLA for --compile, and in the tuned mode (Keras' own advice for speed on a GPU)."""
    return spec.compile or spec.mode == "tuned"


def compile_for_training(
    model: keras.Model,
    spec: pb.TrainSpec,
    total_steps: int,
    with_metrics: bool,
    steps_per_execution: int | None = None,
) -> bool:
    """`model.compile` with the spec's optimizer and loss (and, for fit, the metrics that make
    our epoch results); returns whether the loss takes logits. steps_per_execution: the mode's
    unless given (benchmarks/floors/tensorflow.py gives its own)."""
    from_logits = not outputs_probabilities(model)
    metrics = [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        # friction: the test loss is plain cross-entropy, as PyTorch's evaluation computes it;
        # Keras' val_loss would include the label smoothing.
        keras.metrics.CategoricalCrossentropy(name="cross_entropy", from_logits=from_logits),
    ]
    model.compile(
        optimizer=make_optimizer(spec, total_steps),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=spec.optimizer.label_smoothing
        ),
        metrics=metrics if with_metrics else None,
        jit_compile=xla(spec),
        # Tuned: Keras runs this many steps per call into the compiled function (its documented
        # way to take the host out of a small step), and reports to callbacks once per call.
        steps_per_execution=steps_per_execution or schedule.steps_per_execution(spec.mode),
        # A debug probe's eager execution: the train step runs as Python, op by op.
        run_eagerly=injection.Injection(spec).eager,
    )
    return from_logits


def probe_train_losses(
    model: keras.Model, spec: pb.TrainSpec, probe: np.ndarray, steps: int
) -> list[float]:
    """The losses of `steps` training steps on the probe batch, compiled as train() compiles."""
    num_classes = spec.model.num_classes
    labels = tf.one_hot(datasets.probe_labels(spec.seed, len(probe), num_classes), num_classes)
    compile_for_training(model, spec, steps, with_metrics=False)
    # train_on_batch returns the loss of the step's forward pass, before its update.
    return [float(model.train_on_batch(probe, labels)) for _ in range(steps)]


def inspect(request: pb.InspectRequest) -> pb.ModelReport:
    """Model size, probe logits and probe training losses, on the CPU in fp32 (logits in eval
    mode) so that frameworks compare the same arithmetic."""
    spec = request.spec
    tf.config.set_visible_devices([], "GPU")
    model = models.build(spec.model, spec.seed)
    probe = datasets.probe_batch(spec.seed, request.probe_batch_size)
    logits = model(probe, training=False)
    description = models.describe(model, spec.model)
    losses = probe_train_losses(model, spec, probe, request.train_steps)
    return model_report.report(request, FRAMEWORK, logits, description, losses)
