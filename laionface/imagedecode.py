"""Decode downloaded image bytes into an RGB array, robustly and fast.

EXIF orientation is applied; CMYK, palette, alpha, 16-bit and greyscale images become 8-bit
RGB (alpha composited on white); animations give their first frame. Pillow's
decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) stays on, and truncated files are errors
(`ImageFile.LOAD_TRUNCATED_IMAGES` is left False). With `max_side`, JPEGs are decoded at a
reduced DCT scale (`draft`) and then resized, so a 4000 px photo costs little more than a
640 px one. Every failure raises DecodeError with a readable message; callers turn it into a
`decode_failed` row.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import LaionFaceError

_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


class DecodeError(LaionFaceError, ValueError):
    """Bytes that are not a usable image; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3 uint8, upright, possibly downscaled
    scale: tuple[float, float]  # (sx, sy): original pixel = decoded pixel * scale
    original_size: tuple[int, int]  # (width, height) of the upright full-size image

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of `rgb`."""
        return self.rgb.shape[1], self.rgb.shape[0]


def target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size after fitting (width, height) inside max_side (never upscaled)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit data (and 32-bit ints holding it) scale to 0..255; 8-bit-range data stays.
        if mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "1":
        im = im.convert("L")
    return im.convert("RGB")  # L, P, CMYK (Pillow undoes Adobe's inversion), YCbCr, ...


def _cv2():
    try:
        import cv2  # from opencv-python(-headless); only cv2.resize is used
    except ImportError:
        return None
    return cv2


def _resize(im: Image.Image, size: tuple[int, int], fast: bool) -> np.ndarray:
    """Downscale to `size` (w, h). Fast: integer box reduction, then OpenCV bilinear for the
    last factor below 2 (about 10x quicker than Pillow's convolution here, and with the box
    step no aliasing); otherwise Pillow's antialiased bilinear."""
    if im.size == size:
        return np.asarray(im, dtype=np.uint8)
    cv2 = _cv2() if fast else None
    if cv2 is None:
        return np.asarray(im.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8)
    factor = min(im.width / size[0], im.height / size[1])
    if factor >= 2:
        im = im.reduce(int(factor))
    return cv2.resize(np.asarray(im, dtype=np.uint8), size, interpolation=cv2.INTER_LINEAR)


def decode_image(data: bytes, max_side: int | None = None, fast: bool = True) -> DecodedImage:
    """Decode `data` to upright RGB, fitted inside `max_side` (None: full size).

    `fast` downscales with OpenCV's bilinear after an integer box reduction (for detection);
    False uses Pillow's antialiased resize only (for crops people look at).

    Raises DecodeError for empty, truncated, unknown-format or over-limit (decompression bomb)
    images.
    """
    if not data:
        raise DecodeError("empty image bytes")
    try:
        with warnings.catch_warnings():
            # Over MAX_IMAGE_PIXELS Pillow only warns; over twice it raises. Both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width <= 0 or height <= 0:
                raise DecodeError(f"image has no pixels ({width}x{height})")
            limit = Image.MAX_IMAGE_PIXELS
            if limit and width * height > limit:
                raise DecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over the decompression-bomb "
                    f"limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
                )
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
            except Exception:  # a broken EXIF block must not lose the image
                orientation = 1
            tw, th = target_size(width, height, max_side)
            if (tw, th) != (width, height) and im.format == "JPEG":
                im.draft(im.mode if im.mode in ("RGB", "L") else None, (tw, th))  # DCT-domain 1/2..1/8
            im.load()
            im = _to_rgb(im)
            swapped = False
            if orientation != 1:
                try:
                    im = ImageOps.exif_transpose(im)
                    swapped = orientation in _TRANSPOSING_ORIENTATIONS
                except Exception:  # unknown orientation value: keep the pixels as stored
                    pass
            rgb = _resize(im, (th, tw) if swapped else (tw, th), fast)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb refused: {exc}") from None
    except Image.UnidentifiedImageError:
        raise DecodeError(f"not a recognised image format ({len(data)} bytes, starts {data[:8]!r})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, MemoryError) as exc:
        raise DecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DecodeError(f"decoded to an unexpected shape {rgb.shape}")
    ow, oh = (height, width) if swapped else (width, height)
    dh, dw = rgb.shape[:2]
    return DecodedImage(rgb=np.ascontiguousarray(rgb), scale=(ow / dw, oh / dh), original_size=(ow, oh))

