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

Each framework reads its own layers (services/<framework>/models.py describe) and hands them to
`description`; its trainer's inspect hands the probe's logits and losses to `report`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fwbench.v1 import trainer_pb2 as pb
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
        "initializer": {
            "shared": init.DESCRIPTION,
            "pretrained": f"pretrained: canonical weights sha256 {spec.weights_sha256[:16]}",
        }.get(spec.init, framework_default_init),
    } | arch.get(spec.name, spec.num_classes).facts


def description(
    facts: dict[str, str],
    *,
    conv_biases: Sequence[bool],
    dense_widths: Sequence[tuple[int, int]],
    norms: Sequence[tuple[float, float]],
    dropout_rates: Iterable[float],
    bn_running_variance: str,
    total_params: int,
    trainable_params: int,
    non_trainable_state: int,
    weight_layers: Iterable[tuple[int, int]],
) -> dict:
    """A ModelReport's fields that describe the model, from its layers as a framework reads them:
    whether each convolution has a bias, each dense layer's (inputs, outputs), each BatchNorm's
    (momentum as the new statistic's weight, epsilon), every dropout's rate, and every
    convolution's and dense layer's (weight elements, output positions). `facts`: what the layers
    do not tell (canonical_facts); bn_running_variance: how the framework's BatchNorm updates it."""
    properties = facts | {
        "bn_momentum": distinct(momentum for momentum, _ in norms),
        "bn_epsilon": distinct(epsilon for _, epsilon in norms),
        "dropout": distinct(rate for rate in dropout_rates if rate > 0),
        "conv_bias": conv_bias(sum(conv_biases), len(conv_biases)),
        "dense_layers": dense_chain(dense_widths),
    }
    if norms:
        properties["bn_running_variance"] = bn_running_variance
    return {
        "total_params": total_params,
        "trainable_params": trainable_params,
        "non_trainable_state": non_trainable_state,
        "layer_count": len(conv_biases) + len(dense_widths) + len(norms),
        "forward_flops_per_sample": forward_flops(weight_layers),
        "properties": properties,
    }


def report(
    request: pb.InspectRequest,
    framework: str,
    logits,
    described: dict,
    train_losses: list[float],
) -> pb.ModelReport:
    """Inspect's answer: the model `described` (description), its eval-mode `logits` on the
    probe batch (any array NumPy reads) and the losses of its training steps on it."""
    return pb.ModelReport(
        framework=framework,
        model=request.spec.model.name,
        probe_logits=np.asarray(logits).ravel().tolist(),
        probe_batch_size=request.probe_batch_size,
        probe_train_losses=train_losses,
        **described,
    )
