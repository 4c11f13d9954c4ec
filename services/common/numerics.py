"""What a spec's precision does to float32 arithmetic in every framework: framework-free.

The frameworks disagree on TF32, NVIDIA's float32 mode with a 10-bit mantissa for matrix
products and convolutions (compute capability 8.0, Ampere, and newer). Out of the box, on such a
GPU (as each installed library states it):

- PyTorch: convolutions in TF32 (`torch.backends.cudnn.allow_tf32` is True), matrix products in
  float32 (`torch.backends.cuda.matmul.allow_tf32` is False: float32_matmul_precision "highest");
- TensorFlow: both in TF32 (`tf.config.experimental.enable_tensor_float_32_execution`, on
  unless turned off);
- JAX: both in TF32 (`jax_default_matmul_precision` unset is `lax.Precision.DEFAULT`, which on a
  GPU "uses tensorfloat32 if available").

`native` keeps each framework as it ships: its service touches no TF32 switch. `fp32` turns every
switch off (strict float32), `tf32` every switch on; bf16 and fp16 compute in half precision and
keep the float32 operations left over strict, as fp32 does. Every service then records each
switch as its framework holds it (read back, not assumed), under TF32_KEYS, so that a run's
numerics are what it recorded. On the CPU, and on GPUs older than Ampere, no switch changes any
arithmetic: float32 is float32, and the switch is recorded as not applicable, with the reason.
"""

from __future__ import annotations

NATIVE = "native"
# RunStarted.settings' keys for the TF32 switches, in every framework (runs.csv columns too), and
# what each says.
TF32_KEYS = {
    "tf32_matmul": "TF32 in float32 matrix products",
    "tf32_conv": "TF32 in float32 convolutions",
}
# The first compute capability with TF32 (Ampere).
TF32_COMPUTE_CAPABILITY = (8, 0)


def tf32_switches(precision: str) -> bool | None:
    """What a service sets every TF32 switch of its framework to for a spec's precision: on for
    tf32, off for the others, and None for native (left as the framework ships it)."""
    return None if precision == NATIVE else precision == "tf32"


def tf32_not_applicable(compute_capability: tuple[int, int] | None) -> str:
    """Why the TF32 switches change nothing on a device, or "" where they do. compute_capability:
    the GPU's (major, minor); None for the CPU."""
    if compute_capability is None:
        return "n/a on cpu"
    if tuple(compute_capability) < TF32_COMPUTE_CAPABILITY:
        major, minor = compute_capability
        needed = ".".join(map(str, TF32_COMPUTE_CAPABILITY))
        return f"n/a on compute capability {major}.{minor} (TF32 needs {needed}+)"
    return ""


def tf32_settings(
    matmul: bool, conv: bool, compute_capability: tuple[int, int] | None
) -> dict[str, str]:
    """RunStarted.settings' TF32 entries: each switch as the framework holds it ("true", "false")
    where the device has TF32, else why it does not apply (the arithmetic is float32)."""
    not_applicable = tf32_not_applicable(compute_capability)
    return {
        key: not_applicable or str(on).lower()
        for key, on in zip(TF32_KEYS, (matmul, conv), strict=True)
    }
