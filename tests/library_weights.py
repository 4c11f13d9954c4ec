"""Writes the weights files people have, from models built here (no download): run in a
framework's environment as `python -m tests.library_weights FRAMEWORK KIND MODEL CLASSES OUT_DIR`.

KIND canonical: fwbench's canonical model with the framework's own initialisers, saved as people
save that framework's models: PyTorch's state_dict by torch.save to OUT_DIR/model.pth (the
layout of a torchvision checkpoint), Keras' model.save_weights to OUT_DIR/model.weights.h5. Beside
it, OUT_DIR/expected.npz: the model's tensors in the canonical layout, as the framework's own
conversion reads them from the model (what the file's reader must find); for Keras also
OUT_DIR/converted.npz, the file as services/common/weights.py reads it in this environment (which
has h5py).
KIND library: PyTorch only, torchvision's own model of the name, its state_dict in
OUT_DIR/library.pth; KIND cache: the same with its 1,000-class ImageNet head, where torchvision
caches its default pretrained weights (TORCH_HOME/hub/checkpoints/, under the file name of their
URL), as if they had been downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from services.common import weights

framework, kind, model = sys.argv[1:4]
classes, out = int(sys.argv[4]), Path(sys.argv[5])
spec = pb.ModelSpec(name=model, architecture="canonical", init="framework", num_classes=classes)
if framework == "pytorch":
    import torch

    from services.pytorch import models

    if kind in ("library", "cache"):
        spec.architecture = "library"
        path = out / "library.pth"
        if kind == "cache":
            import torchvision

            spec.num_classes = 1000
            url = torchvision.models.get_model_weights(model).DEFAULT.url
            path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
            path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(models.build(spec, seed=5).state_dict(), path)
        sys.exit()
    built = models.build(spec, seed=5)
    torch.save(built.state_dict(), out / "model.pth")
else:
    from services.tensorflow import models

    built = models.build(spec, seed=5)
    built.save_weights(out / "model.weights.h5")
    converted, _, _ = weights.convert(out / "model.weights.h5", model, classes, seed=0)
    weights.save(out / "converted.npz", model, converted, "test")
weights.save(out / "expected.npz", model, models.canonical_weights(built, spec), "test")
