"""Target images: the built-in test cards (made here, never downloaded), the built-in photographs
(public domain and CC0, shipped in `steer/images/`, see its README) or any PNG/JPEG.

The built-in `card` mixes what a coordinate MLP finds hard: smooth colour
gradients (easy), sharp-edged shapes (a plain ReLU MLP blurs them), and
a chirp of rings and stripes whose frequency rises towards the edge (a ReLU
MLP without an encoding cannot fit them). That is what makes the search matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from steer.errors import UserError

CARDS = ("card", "smooth")
# Real photographs: a search that only ever fits a synthetic card could be tuned to it.
PHOTOS = ("astronaut", "cat", "coffee")
BUILTIN_IMAGES = CARDS + PHOTOS
PHOTO_DIR = Path(__file__).parent / "images"


def _card(n: int) -> np.ndarray:
    """The test card at n x n pixels, float64 RGB in [0, 1], before antialiasing."""
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    # Smooth background: a diagonal colour gradient.
    img = np.stack([0.5 + 0.4 * x, 0.5 + 0.4 * y, 0.6 - 0.3 * (x * y)], axis=-1)
    # Chirped rings in a disc: frequency rises with radius (fine detail).
    disc = r < 0.62
    rings = 0.5 + 0.5 * np.cos(2 * np.pi * (3.0 * r + 14.0 * r**2))
    img[disc] = np.stack([rings, 0.3 + 0.4 * rings, 1.0 - rings], axis=-1)[disc]
    # Sharp wedges around the disc (angular detail, hard edges).
    wedge = (r >= 0.62) & (r < 0.75) & (np.sin(12 * theta) > 0)
    img[wedge] = (0.95, 0.85, 0.1)
    # A checkerboard corner (hard edges at two scales).
    corner = (x > 0.55) & (y > 0.55)
    checks = ((np.floor(x * 12) + np.floor(y * 12)) % 2).astype(bool)
    img[corner & checks] = (0.05, 0.05, 0.05)
    img[corner & ~checks] = (0.95, 0.95, 0.95)
    # Vertical bars whose width shrinks left to right (bottom-left corner).
    bars = (x < -0.5) & (y > 0.6)
    stripes = np.sin(2 * np.pi * 10 * (x + 1) ** 1.6) > 0
    img[bars & stripes] = (0.9, 0.1, 0.2)
    img[bars & ~stripes] = (0.1, 0.2, 0.6)
    # A solid triangle (top-left) and a ring outline (bottom-right).
    tri = (y < -0.55) & (x < -0.55) & (x - y < 0.2)
    img[tri] = (0.1, 0.7, 0.3)
    outline = np.abs(np.hypot(x - 0.75, y + 0.75) - 0.15) < 0.025
    img[outline] = (1.0, 1.0, 1.0)
    return np.clip(img, 0.0, 1.0)


def _smooth(n: int) -> np.ndarray:
    """An easy target for tests: low-frequency colour blobs."""
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    return np.stack([
        0.5 + 0.4 * np.sin(2.0 * x + 0.5),
        0.5 + 0.4 * np.cos(1.5 * y - 0.3),
        0.5 + 0.3 * np.sin(1.7 * (x + y)),
    ], axis=-1)


def builtin_image(name: str, size: int) -> np.ndarray:
    """A built-in image at size x size, float32 RGB in [0, 1], antialiased by 4x supersampling."""
    make = {"card": _card, "smooth": _smooth}.get(name)
    if make is None:
        raise UserError(f"unknown built-in test card {name!r}; built-in: {', '.join(CARDS)}")
    ss = 4
    big = make(size * ss)
    img = big.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    return img.astype(np.float32)


def load_target(image: str, size: int, base: Path | None = None) -> torch.Tensor:
    """The target as a (size, size, 3) float32 tensor in [0, 1].

    `image` is a built-in name or a path to a PNG/JPEG (relative paths are
    resolved against `base`, the spec's folder). Files are converted to RGB
    and resized to size x size.
    """
    if image in CARDS:
        return torch.from_numpy(builtin_image(image, size))
    path = PHOTO_DIR / f"{image}.jpg" if image in PHOTOS else Path(image)
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise UserError(
            f"target image {image!r}: no such file ({path}); "
            f"use a PNG/JPEG path or a built-in name: {', '.join(BUILTIN_IMAGES)}"
        )
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels: refused, not decoded
        raise UserError(f"target image {path}: too large to open ({exc})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"target image {path}: cannot read it as an image ({exc})") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


def to_png(img: torch.Tensor, max_side: int | None = None) -> bytes:
    """Encode an (H, W, 3) tensor in [0, 1] as PNG bytes, shrunk to `max_side` if given."""
    import io

    arr = (img.detach().nan_to_num(0.0).clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    im = Image.fromarray(arr, mode="RGB")
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
