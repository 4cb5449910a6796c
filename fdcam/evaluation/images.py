"""Reading an image file as the models expect it: upright (EXIF), RGB, 16-bit scaled,
decompression bombs refused."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fdcam.errors import FdcamError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def open_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB, upright and with its full tonal range.

    A few ImageNet JPEGs are CMYK or grayscale; a phone photo stores its orientation in
    EXIF (applied here, as a viewer does); 16-bit grayscale (PIL modes ``I;16``, ``I``) is
    scaled to 8 bits (v / 257) instead of being clipped to white; float images (``F``) in
    [0, 1] are scaled by 255. An unreadable file, or one larger than PIL's
    decompression-bomb limit, is a one-line `FdcamError`.
    """
    from PIL import ImageOps

    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright if upright is not None else image)
    except Image.DecompressionBombError as error:
        size = str(error.args[0]).split(" could be")[0].rstrip(", ")
        raise FdcamError(f"cannot read the image {path}: {size} (PIL's guard against "
                         f"decompression bombs; raise PIL.Image.MAX_IMAGE_PIXELS if it is "
                         f"a real photo)") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise FdcamError(f"cannot read the image {path}: {error}; expected a JPEG or PNG"
                         ) from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """PIL's convert("RGB") clips 16-bit and 32-bit grayscale at 255: scale them first."""
    import numpy as np

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        # 16-bit data (I;16, and PNG's 16-bit gray opened as I) spans 0..65535.
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():  # NaN would become black, silently
            bad = int((~np.isfinite(values)).sum())
            raise FdcamError(f"{bad} of its {values.size} pixels are NaN or inf; expected "
                             f"finite values")
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
        gray = np.clip(np.round(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return image.convert("RGB")
