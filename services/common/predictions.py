"""Which test images a run classified right: RunEnd.test_correct, one bit per image.

Written by the recorder at a run's end and read by the report's paired accuracy test; a module of
its own so that the orchestrator reads it without the recorder's sampler (psutil, NVML), which its
image does not install.
"""

from __future__ import annotations

import numpy as np


def pack(correct: np.ndarray) -> bytes:
    """RunEnd.test_correct from one bool per test image (the proto says how it is packed)."""
    return np.packbits(np.asarray(correct, dtype=bool), bitorder="little").tobytes()


def unpack(packed: bytes, images: int) -> np.ndarray:
    """One bool per test image from RunEnd.test_correct; `images` says where the bits end."""
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), bitorder="little")
    if len(bits) < images or bits[images:].any():
        raise ValueError(f"test_correct holds {len(bits)} bits, not {images} images' worth")
    return bits[:images].astype(bool)
