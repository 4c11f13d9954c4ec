"""JAX's serving format, as JAX recommends it: `jax.export` of the inference function, serialized
(StableHLO with its calling convention), with the trained parameters beside it as arguments rather
than constants baked into the program; a serving process needs only jax to run it, no Flax.

The export runs in the training worker (JAX imported, the model in memory); the loader runs in a
fresh process (services/common/deploy.py) that imports only jax, so this module imports no
framework at its top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common.deploy import Format

PROGRAM = "model.jax_export"
PARAMETERS = "parameters.npz"


def formats(model, platform: str) -> list[Format]:
    """The format of the Flax NNX `model` (in eval mode), lowered for `platform` (cpu | cuda)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def export(directory: Path) -> None:
        graphdef, state = nnx.split(model)
        leaves, treedef = jax.tree.flatten(state)

        def infer(leaves, images):
            return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(images).astype(
                jnp.float32
            )

        # The batch dimension stays symbolic, so one program serves batch 1 and 32.
        (batch,) = jax.export.symbolic_shape("batch")
        exported = jax.export.export(jax.jit(infer), platforms=[platform])(
            [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
            jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32),
        )
        (directory / PROGRAM).write_bytes(exported.serialize())
        np.savez(directory / PARAMETERS, *(np.asarray(leaf) for leaf in leaves))

    return [Format("jax.export", export, "services.jax.serving:load", ("jax",))]


def load(directory: Path, device: str):
    import jax

    target = jax.devices("cpu" if device == "cpu" else "gpu")[0]
    exported = jax.export.deserialize(bytearray((directory / PROGRAM).read_bytes()))
    with np.load(directory / PARAMETERS) as saved:
        # np.savez names positional arrays arr_0, arr_1, ... in order.
        leaves = [jax.device_put(saved[f"arr_{i}"], target) for i in range(len(saved.files))]
    call = jax.jit(exported.call)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(call(leaves, jax.device_put(images, target)))

    return predict, f"jax.export.deserialize (jax {jax.__version__})", device
