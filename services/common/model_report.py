"""How a ModelReport's numbers are computed, the same way in every framework.

FLOPs: 2 x multiply-accumulates of convolutions and dense layers (a multiply-add counts as 2).
For such a layer that is 2 x (weight elements) x (output positions): every weight takes part in
one multiply-add per output position (for a dense layer, one position). BatchNorm, activations,
pooling, biases and residual additions are not counted: under 1 % of these models' total, and
the convention of torch.utils.flop_counter and of the models' papers. Each framework lists its
own layers' (weight elements, output positions), so the count describes the model as built,
library models included.

Layer count: layers with parameters, i.e. convolutions (depthwise included), dense layers and
BatchNorms; activations, pools, paddings and additions are not layers here, because frameworks
split them differently (Keras has a ZeroPadding2D layer, PyTorch a conv argument).

Properties: the same keys from every framework; values that are numbers are formatted alike, so
that equal settings read equal.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common import architectures as arch
from services.common import init
from services.common.architectures import weight_layer_flops


def forward_flops(layers: Iterable[tuple[int, int]]) -> int:
    """Total over (weight elements, output positions) of every convolution and dense layer."""
    return sum(weight_layer_flops(w, p) for w, p in layers)


def distinct(values: Iterable[float]) -> str:
    """The distinct values, e.g. '0.1', '0.001, 0.1', or 'none' when there are none."""
    return ", ".join(f"{v:g}" for v in sorted({float(f"{v:g}") for v in values})) or "none"


def dense_chain(widths: Iterable[tuple[int, int]]) -> str:
    """Dense layers' (inputs, outputs) in order as '512→4096→4096→10', or 'none'."""
    widths = list(widths)
    if not widths:
        return "none"
    return "→".join(str(w) for w in [widths[0][0], *(out for _, out in widths)])


def conv_bias(with_bias: int, convs: int) -> str:
    return f"{with_bias} of {convs} convs"


def canonical_facts(spec, framework_default_init: str) -> dict[str, str]:
    """The properties of a canonical model that its definition, not its layers, fixes."""
    return {
        "definition": "fwbench canonical",
        "output": "logits",
        "padding": arch.PADDING,
        "initializer": init.DESCRIPTION if spec.init == "shared" else framework_default_init,
    } | arch.get(spec.name, spec.num_classes).facts
