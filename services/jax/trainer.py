"""JAX trainer: Flax NNX modules, Optax, one jit-compiled train step, the way JAX users write it.

The dataset lives on the device as uint8 arrays, and each batch is cut, augmented and normalised
inside the compiled train step from the shared batch schedule, so no host-side data loader sits
in the measured loop. JAX dispatches asynchronously: the loop only waits for the device where the
recorder asks for progress. Training reads top to bottom: set up, load, build, then each epoch's
steps, progress reports and evaluation, as services/common/harness.py runs them for every
framework.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable, Iterable

# friction: by default XLA reserves 75 % of GPU memory when the backend starts, and memory numbers
# mean nothing; set before JAX starts its backends. XLA_PYTHON_CLIENT_PREALLOCATE=true in the
# service's environment overrides.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
from flax import nnx

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets, deploy, harness, injection, model_report, numerics, schedule
from services.common.spec import WEIGHT_DECAY, SpecError
from services.jax import models, serving

FRAMEWORK = "jax"
# torch.optim.Adam/AdamW's epsilon, which is also Optax's default: added after bias correction.
ADAM_EPSILON = 1e-8
COMPUTE_DTYPES = {"bf16": jnp.bfloat16, "fp16": jnp.float16}
# XLA's matmul/conv precision for float32 operands. "default" lets a GPU use TF32 (or bf16 passes
# on some hardware), so fp32 asks for "highest" explicitly. native sets none: JAX as it ships.
MATMUL_PRECISION = {
    numerics.NATIVE: None,
    "fp32": "highest",
    "tf32": "tensorfloat32",
    "bf16": "default",
    "fp16": "default",
}
# Dynamic loss scaling for fp16, as torch.amp.GradScaler's defaults.
LOSS_SCALE_INITIAL = 2.0**16
LOSS_SCALE_GROWTH_INTERVAL = 2000


def _gpus() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend: no plugin, or no driver
        return []


def _cuda_versions() -> tuple[str, str]:
    """The CUDA runtime and cuDNN versions of jax's CUDA plugin, or empty strings."""
    # friction: JAX has no public API for the CUDA/cuDNN versions it runs with.
    from jax._src.lib import cuda_versions

    if cuda_versions is None or not _gpus():
        return "", ""
    runtime = cuda_versions.cuda_runtime_get_version()  # e.g. 13000, written 13.0 as PyTorch does
    return f"{runtime // 1000}.{runtime % 1000 // 10}", str(cuda_versions.cudnn_get_version())


def describe() -> pb.DescribeResponse:
    cuda, cudnn = _cuda_versions()
    return pb.DescribeResponse(
        framework=FRAMEWORK,
        framework_version=jax.__version__,
        python_version=platform.python_version(),
        cuda_version=cuda,
        cudnn_version=cudnn,
        devices=["cpu", *(f"cuda:{i} {gpu.device_kind}" for i, gpu in enumerate(_gpus()))],
        library_versions={
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
        hostname=platform.node(),
    )


def resolve_device(name: str) -> jax.Device:
    gpus = _gpus()
    if name == "cpu" or (name == "auto" and not gpus):
        return jax.devices("cpu")[0]
    if not gpus:
        raise SpecError(
            f"device: 'cuda' was requested but JAX sees no GPU (jax {jax.__version__}, "
            f"backends: {', '.join(sorted({d.platform for d in jax.devices()}))}): a GPU needs an "
            "NVIDIA driver and the CUDA plugin of services/jax/requirements-gpu.txt; "
            "use device 'cpu' or 'auto'"
        )
    return gpus[0]


def data_parallel_mesh(device: jax.Device, gpus: int) -> jax.sharding.Mesh | None:
    """The 1-D mesh ("data") of a run over `gpus` devices of device's platform (on the CPU, the
    host platform devices that XLA_FLAGS made: services/common/frameworks.py); None for one."""
    if gpus == 1:
        return None
    found = jax.devices(device.platform)
    if len(found) < gpus:
        raise SpecError(
            f"gpus: {gpus} devices asked for, but JAX sees {len(found)} {device.platform} "
            f"device(s); use gpus {len(found)} or fewer"
        )
    return jax.sharding.Mesh(np.array(found[:gpus]), ("data",))


def configure(spec: pb.TrainSpec, device: jax.Device) -> dict[str, str]:
    """Applies the spec's speed/precision knobs and returns them as resolved, for the results."""
    # Everything below runs on `device`: the arrays created here and the compiled steps.
    jax.config.update("jax_default_device", device)
    # friction: JAX uses TF32 for float32 matmuls and convolutions on a GPU unless told not to.
    if MATMUL_PRECISION[spec.precision] is not None:
        jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[spec.precision])
    # As JAX now holds it (native: unset, JAX's own default). Every level but the highest lets a
    # GPU that has TF32 use it (jax.lax.Precision), in matmuls and convolutions alike.
    precision = jax.config.jax_default_matmul_precision
    tf32 = jax.lax.Precision(precision) != jax.lax.Precision.HIGHEST
    cpu = device.platform == "cpu"
    # A CUDA device's is text: "9.0".
    capability = None if cpu else tuple(map(int, device.compute_capability.split(".")))
    settings = {
        "device": "cpu" if cpu else f"cuda:{device.id}",
        "precision": spec.precision,
        **numerics.tf32_settings(tf32, tf32, capability),
        "matmul_precision": precision or "default (unset)",
        "compute_dtype": jnp.dtype(COMPUTE_DTYPES.get(spec.precision, jnp.float32)).name,
        "loss_scale": "dynamic" if spec.precision == "fp16" else "none",
        # friction: JAX has no eager training loop worth measuring: every run is jit-compiled,
        # and the spec's compile=false cannot be honoured.
        "compile": "xla (nnx.jit)" if spec.compile else "xla (nnx.jit; JAX always compiles)",
        "mode": spec.mode,
        "train_step": (
            f"functional: K={schedule.TUNED_STEPS_PER_EXECUTION} steps per dispatch, lax.scan "
            "over the epoch plan, flat donated state"
            if spec.mode == "tuned"
            else "nnx.jit, one step per dispatch"
        ),
        "steps_per_execution": str(schedule.steps_per_execution(spec.mode)),
        "evaluation": (
            "one compiled program over the test split (lax.map over its batches)"
            if spec.mode == "tuned"
            else "nnx.jit, one test batch per dispatch"
        ),
        # Tuned changes nothing here: the default step is already one XLA program with donated
        # buffers, dispatched asynchronously, and the batches are cut on the device.
        "cudnn_benchmark": "always (XLA autotunes)",
        "weight_decay": WEIGHT_DECAY[spec.optimizer.name],
        "input_pipeline": "on the device, cut inside the compiled train step",
        # A persistent cache (JAX_COMPILATION_CACHE_DIR) that holds this job's programs takes
        # their compilation out of the time to the first step: the results say whether one was on.
        "compilation_cache": jax.config.jax_compilation_cache_dir or "off",
        # XLA's CPU backend uses every schedulable core.
        "threads": str(len(os.sched_getaffinity(0))),
    }
    if device.platform != "cpu":
        settings["xla_preallocate"] = os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"]
    return settings


class Pipeline:
    """The dataset on the device and the batches of the shared schedule, cut there.

    The cutting is jit-compiled functions of the batch's start (a traced scalar), so one program
    serves every batch of a size; only the short last batch of an epoch is a second shape.
    """

    def __init__(
        self, dataset: datasets.Dataset, batch_size: int, mesh: jax.sharding.Mesh | None = None
    ):
        self.batch_size = batch_size
        self.train_samples = len(dataset.train_labels)
        # In data parallel every device holds the whole dataset (as each PyTorch rank does) and
        # each training batch is split over the devices: device d takes rows [d*b/N, (d+1)*b/N)
        # of its b rows (schedule.device_rows), which is how a 1-D sharding lays them out.
        self.place = jnp.asarray
        self.batch_sharding = None
        if mesh is not None:
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            self.place = functools.partial(jax.device_put, device=replicated)
            self.batch_sharding = jax.sharding.NamedSharding(
                mesh, jax.sharding.PartitionSpec("data")
            )
        pad = schedule.PAD
        # Padded once, so that every crop is a pure gather.
        padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
        self.train_padded = jnp.pad(self.place(dataset.train_images), padding)
        self.train_labels = self.place(dataset.train_labels)
        self.test_images = self.place(dataset.test_images)
        self.test_labels = self.place(dataset.test_labels)
        self.mean = self.place(np.asarray(dataset.mean, np.float32))
        self.std = self.place(np.asarray(dataset.std, np.float32))

    def set_epoch(self, plan: schedule.EpochPlan) -> None:
        # One upload per epoch: int [4, N] of order, dy, dx and flip.
        self.plan = self.place(np.stack([plan.order, plan.dy, plan.dx, plan.flip]))

    def size(self, k: int) -> int:
        return min(self.batch_size, self.train_samples - k * self.batch_size)

    def augmented(self, k: int) -> jax.Array:
        """Batch k of the epoch as uint8 NHWC, after crop and flip."""
        return _augmented(self.train_padded, self.plan, k * self.batch_size, self.size(k))

    def train_batch(self, k: int) -> tuple[jax.Array, jax.Array]:
        start, size = k * self.batch_size, self.size(k)
        order = _batch_order(self.plan, start, size)
        images = normalise(self.augmented(k), self.mean, self.std)
        if self.batch_sharding is not None:
            # Each device keeps its rows of the batch it holds whole: no copy between devices.
            return jax.device_put((images, self.train_labels[order]), self.batch_sharding)
        return images, self.train_labels[order]

    def device_data(self, k: int) -> tuple:
        """What cut() takes to cut batches k, k + 1, ... inside a compiled program."""
        start = k * self.batch_size
        return self.train_padded, self.train_labels, self.plan, self.mean, self.std, start

    @staticmethod
    def cut(i, data: tuple, size: int, sharding=None) -> tuple[jax.Array, jax.Array]:
        """Batch i after the first of device_data (i traced), as train_batch cuts it; with the
        batch's sharding in data parallel (each device's rows, as train_batch's)."""
        padded, labels, plan, mean, std, first_start = data
        start = first_start + i * size
        order = jax.lax.dynamic_slice_in_dim(plan[0], start, size)
        batch = normalise(_augmented(padded, plan, start, size), mean, std), labels[order]
        if sharding is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, sharding)

    def test_batches(self):
        for start in range(0, len(self.test_labels), self.batch_size):
            end = start + self.batch_size
            yield (
                normalise(self.test_images[start:end], self.mean, self.std),
                self.test_labels[start:end],
            )


@functools.partial(jax.jit, static_argnames="size")
def _augmented(padded: jax.Array, plan: jax.Array, start, size: int) -> jax.Array:
    order, dy, dx, flip = jax.lax.dynamic_slice_in_dim(plan, start, size, axis=1)
    rows, cols = schedule.crop_indices(dy, dx, flip, jnp.arange(schedule.SIZE))
    batch = jnp.arange(size)[:, None, None]
    return padded[order][batch, rows[:, :, None], cols[:, None, :]]


@jax.jit
def normalise(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    return (images.astype(jnp.float32) / 255 - mean) / std


@functools.partial(jax.jit, static_argnames="size")
def _batch_order(plan: jax.Array, start, size: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(plan[0], start, size)


def make_optimizer(spec: pb.TrainSpec, total_steps: int) -> optax.GradientTransformation:
    o = spec.optimizer
    # Both schedules are per step; Optax's cosine decay to 0 equals PyTorch's CosineAnnealingLR.
    learning_rate = (
        optax.cosine_decay_schedule(o.learning_rate, decay_steps=total_steps)
        if o.lr_schedule == "cosine"
        else o.learning_rate
    )
    if o.name == "adamw":
        return optax.adamw(learning_rate, eps=ADAM_EPSILON, weight_decay=o.weight_decay)
    if o.name == "sgd":
        transform = optax.sgd(learning_rate, momentum=o.momentum or None, nesterov=o.nesterov)
    else:
        transform = optax.adam(learning_rate, eps=ADAM_EPSILON)
    # Coupled L2, as torch.optim.SGD and Adam apply weight_decay: l2 * w added to the gradient
    # before the optimiser sees it.
    return optax.chain(optax.add_decayed_weights(o.weight_decay), transform)


def with_overflow_skip(spec: pb.TrainSpec, transform: optax.GradientTransformation):
    """Under fp16 loss scaling, an update whose gradients overflowed is skipped, never applied."""
    if spec.precision != "fp16":
        return transform
    return optax.apply_if_finite(transform, max_consecutive_errors=np.iinfo(np.int32).max)


def new_optimizer(model, transform: optax.GradientTransformation) -> nnx.Optimizer:
    """An Optimizer over model's parameters, its state made by one compiled program."""
    # friction: eager, Optax's init compiles a tiny program per distinct parameter shape (3.5 s
    # for MobileNetV2 on 2 cores, against 0.7 s under jit).
    return nnx.jit(lambda model: nnx.Optimizer(model, transform, wrt=nnx.Param))(model)


def loss_fn(model, images, labels, label_smoothing: float):
    logits = model(images).astype(jnp.float32)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean(), logits


class LossScale(nnx.Variable):
    """fp16's dynamic loss scale and the number of finite steps since it last changed."""


def training_objects(spec: pb.TrainSpec, model_spec: pb.ModelSpec, total_steps: int) -> tuple:
    """What a training step updates: the model, its optimizer, and under fp16 the loss scale
    (else None)."""
    model = models.build(model_spec, spec.seed, COMPUTE_DTYPES.get(spec.precision, jnp.float32))
    optimizer = new_optimizer(model, with_overflow_skip(spec, make_optimizer(spec, total_steps)))
    fp16 = spec.precision == "fp16"
    return model, optimizer, LossScale(jnp.array([LOSS_SCALE_INITIAL, 0.0])) if fp16 else None


def update(model, optimizer, scale, images, labels, label_smoothing):
    """One update of model: (the loss before it, correct predictions)."""
    if scale is None:
        grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
        (loss, logits), grads = grad_fn(model, images, labels, label_smoothing)
    else:
        loss, logits, grads = scaled_gradients(model, scale, images, labels, label_smoothing)
    optimizer.update(model, grads)
    return loss, (logits.argmax(-1) == labels).sum()


# Default: the step as Flax's guides write it, nnx.jit over the objects themselves. nnx.jit walks
# the model's object graph in Python on every call ("Performance considerations" in Flax's docs).
train_step = nnx.jit(update, static_argnames="label_smoothing", donate_argnums=(0, 1))


class FunctionalStep:
    """Tuned: Flax's documented remedy for that walk (a functional training loop), and Keras'
    steps_per_execution in JAX: one compiled program runs `count` training steps, a lax.scan over
    consecutive batches, so the host's cost of a dispatch is paid once for all of them.

    The model and optimizer are split once into a graph definition and their arrays, held as a
    flat list (donated to each call): JAX flattens a list of arrays in C++, while the nnx State
    pytree would be walked in Python on every dispatch (~420 arrays for these models). Inside the
    program the list is unflattened with the treedef of the split, merged, updated, and flattened
    again. The epoch's sums (loss, correct predictions, loss since the last progress report) are
    carried on the device. The objects are brought up to date (sync) before anything reads them.

    friction: on the CPU, XLA leaves convolution gradients inside a loop body in a layout its
    fast kernels do not take (jax issue 12868), so there this loop trains slower than the default
    step (MobileNetV2 about 5x on 2 cores). On an H200, several steps of these models in one
    program measured within a few percent of PyTorch's floor.
    """

    def __init__(self, model, optimizer, scale: LossScale | None, label_smoothing: float, cut):
        """cut(i, data, size) -> (images, labels): the dispatch's batch i (traced) of `size`
        samples, from the arrays `data` given to the call."""
        self.objects = (model, optimizer) if scale is None else (model, optimizer, scale)
        graphdef, state = nnx.split(self.objects)
        self.leaves, self.treedef = jax.tree.flatten(state)
        self.steps = jax.jit(
            functools.partial(_train_steps, graphdef, self.treedef, cut, label_smoothing),
            static_argnames=("count", "size"),
            donate_argnums=(0, 1),
        )
        # (count, size) -> its program compiled ahead (compile); other shapes go through jit.
        self.programs: dict[tuple[int, int], Callable] = {}
        self.zero_sums()

    def compile(self, data: tuple, shapes: Iterable[tuple[int, int]]) -> None:
        """Compiles the program for each (count, size) before the calls that need it. An epoch's
        last calls (the full batches left over, the short last batch) are new shapes: compiled on
        first use, each was a stall of seconds inside the first epoch, among its timed steps."""
        if jax.config.jax_disable_jit:  # a debug probe's eager execution compiles nothing
            return
        for count, size in shapes:
            lowered = self.steps.lower(self.leaves, self.sums, data, count=count, size=size)
            self.programs[count, size] = lowered.compile()

    def zero_sums(self) -> None:
        # Epoch loss sum, epoch correct count, loss sum since the last progress report.
        self.sums = (jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.zeros(()))

    def __call__(self, data: tuple, count: int, size: int) -> None:
        program = self.programs.get((count, size))
        if program is None:
            program = functools.partial(self.steps, count=count, size=size)
        self.leaves, self.sums = program(self.leaves, self.sums, data)

    def take_window_loss(self) -> jax.Array:
        loss_sum, correct, window_loss = self.sums
        self.sums = (loss_sum, correct, jnp.zeros(()))
        return window_loss

    def sync(self) -> None:
        nnx.update(self.objects, jax.tree.unflatten(self.treedef, self.leaves))


def _train_steps(graphdef, treedef, cut, label_smoothing, leaves, sums, data, count, size):
    def step(carry, i):
        leaves, (loss_sum, correct, window_loss) = carry
        model, optimizer, *scale = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        images, labels = cut(i, data, size)
        loss, right = update(model, optimizer, *(scale or [None]), images, labels, label_smoothing)
        leaves, updated = jax.tree.flatten(nnx.state((model, optimizer, *scale)))
        # The carry is matched by position: arrays in another order would be mixed up silently.
        assert updated == treedef, "the state's structure changed inside the step"
        return (leaves, (loss_sum + loss * size, correct + right, window_loss + loss)), None

    (leaves, sums), _ = jax.lax.scan(step, (leaves, sums), jnp.arange(count))
    return leaves, sums


def scaled_gradients(model, scale, images, labels, label_smoothing):
    """fp16 gradients with dynamic loss scaling, as torch.amp.GradScaler: where they overflow,
    the update is skipped (make_optimizer's apply_if_finite) and the scale halves; after
    LOSS_SCALE_GROWTH_INTERVAL finite steps it doubles."""

    # friction: neither JAX nor Optax scales losses; fp16 training needs this by hand.
    def scaled_loss(model):
        loss, logits = loss_fn(model, images, labels, label_smoothing)
        return loss * scale[...][0], (loss, logits)

    grads, (loss, logits) = nnx.grad(scaled_loss, has_aux=True)(model)
    value, finite_steps = scale[...]
    grads = jax.tree.map(lambda g: g / value, grads)
    finite = jnp.all(jnp.stack([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
    finite_steps = jnp.where(finite, finite_steps + 1, 0)
    grow = finite_steps >= LOSS_SCALE_GROWTH_INTERVAL
    value = jnp.where(finite, jnp.where(grow, value * 2, value), value / 2)
    scale[...] = jnp.stack([value, jnp.where(grow, 0, finite_steps)])
    return loss, logits, grads


def logits_of(model, images):
    return model(images).astype(jnp.float32)


predict = nnx.jit(logits_of)


def evaluate_batch(model, images, labels):
    """(The batch's summed loss, the class predicted for each image) of model as it is."""
    logits = logits_of(model, images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
    return loss, logits.argmax(-1)


# Default: one nnx.jit call per test batch, as Flax's guides evaluate.
eval_step = nnx.jit(evaluate_batch)


@functools.partial(nnx.jit, static_argnames="batch_size")
def evaluate_all(model, images, labels, mean, std, batch_size: int):
    """Tuned: (summed loss, predicted classes) of the whole test split in one compiled program,
    a lax.map over its batches of the run's batch size, the short last one after them. Each
    nnx.jit call costs the host a walk of the model (23 ms for MobileNetV2 on 2 CPU cores, where
    the same program through jax.jit over its arrays took 5 ms); per test batch, as the default
    evaluates, that walk made JAX's evaluation on an H200 7-12 s where PyTorch's took 1.1-1.4 s.
    Here it is paid once per evaluation."""

    def batch(data):
        x, y = data
        return evaluate_batch(model, normalise(x, mean, std), y)

    full = len(labels) // batch_size * batch_size
    shape = (full // batch_size, batch_size)
    losses, classes = jax.lax.map(
        batch, (images[:full].reshape(*shape, *images.shape[1:]), labels[:full].reshape(shape))
    )
    loss, classes = losses.sum(), classes.reshape(-1)
    if full < len(labels):
        last_loss, last_classes = batch((images[full:], labels[full:]))
        loss, classes = loss + last_loss, jnp.concatenate([classes, last_classes])
    return loss, classes


class Training(harness.Loop):
    """One training run, in the order services/common/harness.py calls it: set up, load, build,
    then every epoch through the loop's hooks below. Default: one nnx.jit step per call, as
    Flax's guides write it, the epoch's sums added up from what each step returns."""

    def __init__(self, spec: pb.TrainSpec, inject: injection.Injection):
        self.spec = spec
        self.inject = inject
        self.device = resolve_device(spec.device)
        self.mesh = data_parallel_mesh(self.device, spec.gpus)
        self.settings = configure(spec, self.device)
        self.settings["execution"] = "jax.disable_jit()" if inject.eager else "jax.jit (nnx.jit)"
        if self.mesh is not None:
            self.settings["data_parallel"] = (
                f"jax.sharding: a 1-D mesh of {self.mesh.size} {self.device.platform} devices, "
                "the batch sharded, the model and optimizer replicated (XLA adds BatchNorm's "
                "and the gradients' sums across devices: the global batch's); evaluation "
                "replicated"
            )
        # A debug probe's eager execution: every jit-compiled function runs as Python, op by op,
        # as under `with jax.disable_jit()` (the worker process runs this one job).
        jax.config.update("jax_disable_jit", inject.eager)
        self.smoothing = spec.optimizer.label_smoothing
        cpu = self.device.platform == "cpu"
        self.framework_version = jax.__version__
        self.device_name = "cpu" if cpu else self.device.device_kind
        self.cuda_device_index = None if cpu else self.device.id
        self.devices = 1 if self.mesh is None else self.mesh.size
        self.device_pids = [os.getpid()] * self.devices

    def load(self, dataset: datasets.Dataset) -> None:
        self.pipeline = Pipeline(dataset, self.spec.batch_size, self.mesh)
        self.dataset = dataset
        jax.block_until_ready(self.pipeline.train_padded)
        self.train_batch = self.inject.batches(self.pipeline.train_batch, "NHWC", jnp.transpose)

    def build(self, model_spec: pb.ModelSpec, total_steps: int) -> None:
        self.model, self.optimizer, self.scale = training_objects(
            self.spec, model_spec, total_steps
        )
        if self.mesh is not None:
            # One copy of the state on every device; the step's sharded batch decides the rest.
            objects = tuple(o for o in (self.model, self.optimizer, self.scale) if o is not None)
            nnx.update(objects, self.pipeline.place(nnx.state(objects)))
        jax.block_until_ready(nnx.state((self.model, self.optimizer)))

    def fit(self, recorder) -> None:
        harness.run_epochs(self.spec, recorder, self, self.dataset)

    # --- the loop, each epoch --------------------------------------------------------------

    def begin_epoch(self, plan: schedule.EpochPlan) -> None:
        self.pipeline.set_epoch(plan)

    def zero_sums(self) -> None:
        self.loss_sum = self.correct = self.window_loss_sum = 0

    def train_steps(self, first: int, count: int) -> None:
        """One step (steps_per_call is 1): batch `first`."""
        # friction: a short last batch is a new shape, so XLA compiles the step once more,
        # inside the first epoch's last step.
        x, y = self.train_batch(first)
        loss, right = train_step(self.model, self.optimizer, self.scale, x, y, self.smoothing)
        self.loss_sum, self.correct = self.loss_sum + loss * len(y), self.correct + right
        self.window_loss_sum = self.window_loss_sum + loss

    def window_loss(self, steps: int) -> float:
        return float(jax.block_until_ready(self.window_loss_sum)) / steps

    def window_reported(self) -> None:
        self.window_loss_sum = 0

    def evaluate(self) -> tuple[float, np.ndarray]:
        self.model.eval()
        loss_sum, predicted = self.test_sums()
        self.model.train()
        # float() and np.asarray wait for the device.
        return float(loss_sum) / len(self.pipeline.test_labels), np.asarray(predicted)

    def test_sums(self) -> tuple[jax.Array, jax.Array]:
        """(Summed test loss, predicted classes) of the model in eval mode, not waited for."""
        loss_sum, predicted = 0, []
        for x, y in self.pipeline.test_batches():
            loss, classes = eval_step(self.model, x, y)
            loss_sum = loss_sum + loss
            predicted.append(classes)
        return loss_sum, jnp.concatenate(predicted)

    def epoch_sums(self) -> tuple[float, int]:
        return float(self.loss_sum), int(self.correct)

    # --- after training --------------------------------------------------------------------

    def canonical_weights(self) -> dict[str, np.ndarray]:
        return models.canonical_weights(self.model, self.spec.model)

    def peak_memory(self) -> dict[str, int | None]:
        stats = self.device.memory_stats()  # None on the CPU
        return {"peak_framework_mem_bytes": stats.get("peak_bytes_in_use") if stats else None}

    def deployment(self, diverged: bool) -> pb.Deployment:
        """The trained model exported in JAX's serving format and measured, against its own
        eval-mode outputs in strict fp32 (services/common/deploy.py)."""
        self.model.eval()
        cpu = self.device.platform == "cpu"
        # The export is lowered under this precision too: it is part of the serialized program.
        with jax.default_matmul_precision(MATMUL_PRECISION["fp32"]):
            reference = np.asarray(predict(self.model, jnp.asarray(deploy.probe(self.spec.seed))))
            formats = serving.formats(self.model, "cpu" if cpu else "cuda")
            served_on = "cpu" if cpu else f"cuda:{self.device.id}"
            return deploy.measure(self.spec, formats, reference, served_on, diverged)


class TunedTraining(Training):
    """Tuned: FunctionalStep's up to TUNED_STEPS_PER_EXECUTION steps of one batch size per
    dispatch, the epoch's sums carried on the device."""

    steps_per_call = schedule.TUNED_STEPS_PER_EXECUTION

    def fit(self, recorder) -> None:
        cut = functools.partial(Pipeline.cut, sharding=self.pipeline.batch_sharding)
        self.functional = FunctionalStep(
            self.model, self.optimizer, self.scale, self.smoothing, cut
        )
        super().fit(recorder)

    def load(self, dataset: datasets.Dataset) -> None:
        super().load(dataset)
        calls = schedule.executions(
            self.pipeline.train_samples, self.spec.batch_size, self.steps_per_call
        )
        # (steps, batch size) of each program an epoch calls: compiled in the run's first call.
        self.shapes = sorted({(count, self.pipeline.size(first)) for first, count in calls})
        self.settings["compiled_ahead"] = "steps × batch size: " + ", ".join(
            f"{count} × {size}" for count, size in self.shapes
        )

    def zero_sums(self) -> None:
        self.functional.zero_sums()

    def train_steps(self, first: int, count: int) -> None:
        data = self.pipeline.device_data(first)
        if first == 0 and not self.functional.programs:
            # Every shape of the epoch, in the run's first call: its window is the one that
            # includes compilation (the recorder's first step), and no later one does.
            self.functional.compile(data, self.shapes)
        self.functional(data, count, self.pipeline.size(first))

    def window_loss(self, steps: int) -> float:
        return float(jax.block_until_ready(self.functional.take_window_loss())) / steps

    def window_reported(self) -> None:
        """take_window_loss has restarted the window already."""

    def end_epoch(self) -> None:
        self.functional.sync()

    def test_sums(self) -> tuple[jax.Array, jax.Array]:
        p = self.pipeline
        return evaluate_all(
            self.model, p.test_images, p.test_labels, p.mean, p.std, self.spec.batch_size
        )

    def epoch_sums(self) -> tuple[float, int]:
        loss_sum, correct, _ = self.functional.sums
        return float(loss_sum), int(correct)


def train(spec: pb.TrainSpec, recorder) -> None:
    harness.train(spec, recorder, TunedTraining if spec.mode == "tuned" else Training)


def probe_train_losses(model, spec: pb.TrainSpec, probe: jax.Array, steps: int) -> list[float]:
    """The losses of `steps` training steps on the probe batch, taken as train() takes them."""
    labels = jnp.asarray(datasets.probe_labels(spec.seed, len(probe), spec.model.num_classes))
    optimizer = new_optimizer(model, make_optimizer(spec, steps))
    smoothing = spec.optimizer.label_smoothing
    model.train()
    return [
        float(train_step(model, optimizer, None, probe, labels, smoothing)[0]) for _ in range(steps)
    ]


def inspect(request: pb.InspectRequest) -> pb.ModelReport:
    """Model size, probe logits and probe training losses, on the CPU in fp32 (logits in eval
    mode) so that frameworks compare the same arithmetic."""
    spec = request.spec
    jax.config.update("jax_default_device", jax.devices("cpu")[0])
    jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION["fp32"])
    model = models.build(spec.model, spec.seed)
    probe = jnp.asarray(datasets.probe_batch(spec.seed, request.probe_batch_size))
    model.eval()
    logits = predict(model, probe)
    description = models.describe(model, spec.model)
    losses = probe_train_losses(model, spec, probe, request.train_steps)
    return model_report.report(request, FRAMEWORK, logits, description, losses)
