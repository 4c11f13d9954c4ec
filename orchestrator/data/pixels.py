"""Any image Pillow decodes, as the 8-bit RGB pixels of the dataset format, its range kept.

Pillow's convert("RGB") is right for its 8-bit modes but clips the wider ones: an I;16 pixel of
40,000 (a 16-bit greyscale PNG) becomes 255, and such an image turns white. Those modes are
scaled here instead. Every conversion returns the rule it applied, in words, which meta.json
records per source mode, so that a dataset says what was done to its images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# The 8-bit modes, which Pillow converts without loss of range, and what it does with each.
PILLOW_RULES = {
    "1": "1-bit: 0 to 0, 1 to 255, in R, G and B",
    "L": "8-bit grey copied to R, G and B",
    "LA": "8-bit grey copied to R, G and B; alpha dropped",
    "La": "8-bit grey divided by its premultiplied alpha, copied to R, G and B; alpha dropped",
    "P": "palette colours looked up; transparency dropped",
    "PA": "palette colours looked up; alpha dropped",
    "RGB": "as is",
    "RGBA": "alpha dropped",
    "RGBa": "R, G, B divided by their premultiplied alpha; alpha dropped",
    "RGBX": "padding band dropped",
    "CMYK": "Pillow's rule without colour profile: R = (255 - C) * (255 - K) / 255, G and B alike",
    "YCbCr": "JPEG's full-range YCbCr (ITU-R BT.601) to RGB",
    "LAB": "CIE L*a*b* to sRGB, by Pillow",
    "HSV": "hue, saturation, value to RGB, by Pillow",
}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_MAX = 65535
SIXTEEN_BIT_RULE = "16-bit grey scaled to 8 bits, round(v * 255 / 65535), in R, G and B"
# Pillow decodes 16-bit PGM/PPM (any maxval, rescaled to 0..65535) into the 32-bit mode I: in that
# range mode I is read as 16-bit; beyond it (signed or 32-bit TIFF, FITS) it has no nominal scale.
INT_RULE = "32-bit integer grey within 0..65535 read as 16-bit, round(v * 255 / 65535)"
# Float images (TIFF, FITS) conventionally hold intensities in [0, 1].
FLOAT_RULE = "float grey within [0, 1] scaled, round(v * 255)"
STRETCH_RULE = (
    "{kind} grey outside {nominal}: the image's own minimum..maximum stretched to 0..255, "
    "round((v - min) * 255 / (max - min)); a constant image becomes 0"
)


class ConversionError(ValueError):
    """The image's pixels have no 8-bit RGB value under the rules here."""


def to_rgb(image: Image.Image) -> tuple[Image.Image, str]:
    """`image` as 8-bit RGB, and the rule applied (one of this module's, in words)."""
    if image.mode in PILLOW_RULES:
        # Pillow converts La only to LA (La to RGB is "not supported").
        source = image.convert("LA") if image.mode == "La" else image
        return source.convert("RGB"), PILLOW_RULES[image.mode]
    if image.mode in (*SIXTEEN_BIT_MODES, "I", "F"):
        grey, rule = scaled_grey(np.asarray(image), image.mode)
        return Image.fromarray(grey, "L").convert("RGB"), rule
    raise ConversionError(
        f"Pillow mode {image.mode!r} has no conversion to 8-bit RGB here; "
        "save the image as RGB (or 8-bit or 16-bit greyscale) first"
    )


def scaled_grey(values: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """8-bit grey of a 16-bit, 32-bit integer or float single-band image, and the rule applied."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ConversionError(
            "its float pixels include NaN or infinity, which have no 8-bit value; "
            "replace them in the image, or leave the file out"
        )
    low, high = float(values.min()), float(values.max())
    if mode in SIXTEEN_BIT_MODES:
        top, rule = SIXTEEN_BIT_MAX, SIXTEEN_BIT_RULE
    elif mode == "I" and low >= 0 and high <= SIXTEEN_BIT_MAX:
        top, rule = SIXTEEN_BIT_MAX, INT_RULE
    elif mode == "F" and low >= 0 and high <= 1:
        top, rule = 1, FLOAT_RULE
    else:
        kind, nominal = ("32-bit integer", "0..65535") if mode == "I" else ("float", "[0, 1]")
        rule = STRETCH_RULE.format(kind=kind, nominal=nominal)
        if high == low:
            return np.zeros(values.shape, np.uint8), rule
        values, top = values - low, high - low
    return np.rint(values * 255 / top).astype(np.uint8), rule
