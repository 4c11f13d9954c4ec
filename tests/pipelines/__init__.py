"""Each framework's input pipeline cutting the shared schedule's batches, run in that framework's
environment by tests/test_batches.py: `python -m tests.pipelines.FRAMEWORK DATA_DIR OUT SEED BATCH`.

Every module writes an .npz: u8_<augment>_e<epoch>_k<batch> (uint8 NHWC after crop/flip) for the
first and last batch of epochs 0 and 1, and x_<augment>_e<epoch> / y_<augment>_e<epoch> (float32
NHWC, labels) of batch 0 as training gets them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.common import datasets


def arguments() -> tuple[datasets.Dataset, str, int, int]:
    """(dataset, out path, seed, batch size) from the command line."""
    data_dir, out, seed, batch_size = sys.argv[1:5]
    return datasets.from_directory(Path(data_dir)), out, int(seed), int(batch_size)
