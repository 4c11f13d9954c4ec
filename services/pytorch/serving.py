"""PyTorch's serving formats, as PyTorch recommends them: a torch.export ExportedProgram saved as
.pt2, and ONNX exported through the dynamo exporter and run by ONNX Runtime.

The exports run in the training worker (torch imported, the model in memory); the loaders run in
a fresh process (services/common/deploy.py) that imports only what serving the format needs, so
this module imports no framework at its top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common.deploy import Format

EXPORTED_PROGRAM = "model.pt2"
ONNX_MODEL = "model.onnx"
# The batch dimension stays symbolic, so one artifact serves batch 1 and 32.
MAX_BATCH = 1024


def formats(model, example) -> list[Format]:
    """The formats of `model` (in eval mode, on its device), traced with the example batch."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)

    def export_program(directory: Path) -> None:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, directory / EXPORTED_PROGRAM)

    def export_onnx(directory: Path) -> None:
        # friction: ONNX Runtime here runs on the CPU; the exporter traces on the model's device.
        torch.onnx.export(
            model,
            (example,),
            directory / ONNX_MODEL,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=["images"],
            output_names=["logits"],
        )

    return [
        Format(
            "torch.export",
            export_program,
            "services.pytorch.serving:load_program",
            ("torch",),
            channels_first=True,
        ),
        Format("onnx", export_onnx, "services.pytorch.serving:load_onnx", ("onnxruntime",), True),
    ]


def strict_fp32() -> None:
    """Serve in strict fp32, as the trained model's reference outputs are computed: PyTorch's
    convolutions would use TF32 on a GPU by default."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def load_program(directory: Path, device: str):
    import torch

    strict_fp32()
    # The program's weights come back on the device they were exported from.
    module = torch.export.load(directory / EXPORTED_PROGRAM).module()
    target = torch.device(device)

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(target)).cpu().numpy()

    return predict, f"torch.export.load (torch {torch.__version__})", str(target)


def load_onnx(directory: Path, device: str):
    import onnxruntime

    wanted = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    # The CPU build of ONNX Runtime (the one fwbench installs) has no CUDA provider: it says so.
    provider = wanted if wanted in onnxruntime.get_available_providers() else "CPUExecutionProvider"
    session = onnxruntime.InferenceSession(str(directory / ONNX_MODEL), providers=[provider])
    (output,) = (o.name for o in session.get_outputs())

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run([output], {"images": images})[0]

    served_on = device if provider == wanted else "cpu"
    return predict, f"onnxruntime {onnxruntime.__version__} ({provider})", served_on
