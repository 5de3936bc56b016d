"""Image loading and the two image transforms (SAM input and CLIP input), used everywhere.

Both transforms take an RGB ``uint8`` array ``[H, W, 3]`` as :func:`load_image` returns it and
reproduce the original pipeline bit for bit: SAM's ``ResizeLongestSide`` + normalise + pad (done
on the model's device, :mod:`utils.sam_input`; :class:`SamTransform` hands over the pixels), and
transformers' ``CLIPImageProcessor`` (slow PIL path) as configured in a vision tower directory.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.regular_files import check_regular_file
from utils.sam_input import longest_side_shape

_EXIF_ORIENTATION = 0x0112


def _check_rgb(image: np.ndarray, name: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"{name} must be an RGB numpy array of shape [H, W, 3], got {shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0-255), got {image.dtype}.")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an upright RGB ``uint8`` array ``[H, W, 3]``.

    Matches what the original got from ``cv2.imread`` + BGR->RGB (identical pixels for RGB,
    grayscale, palette, RGBA and 16-bit PNGs and for RGB/grey/CMYK JPEGs): EXIF orientation is
    applied, alpha is dropped (not blended), 16-bit samples keep their high byte.

    Raises:
        ValueError: the file is missing or not a regular file (a FIFO, a directory, a loop of
            links), is not an image, is truncated/corrupt, or has more pixels than Pillow's
            decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) allows.
    """
    path = Path(path)
    check_regular_file(path, "image file")  # a FIFO would block the reader forever
    try:
        with Image.open(path) as image:
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
            image.load()  # decode now, so truncation raises here
            return pil_to_rgb(image)
    except Image.DecompressionBombError as error:
        raise ValueError(f"Image {str(path)!r} is too large to decode safely: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Cannot read image {str(path)!r}: {error}.") from error


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> RGB uint8 [H, W, 3], converting like OpenCV's IMREAD_COLOR."""
    if image.mode == "RGB":
        return np.asarray(image).copy()
    if image.mode.startswith("I"):  # 16-bit greyscale ("I;16*", or "I" in older Pillow)
        grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "CMYK":
        # Pillow hands out Adobe-inverted CMYK; undo that and convert with OpenCV's formula.
        cmyk = 255 - np.asarray(image).astype(np.int32)
        k = cmyk[:, :, 3:]
        return (k - (((255 - cmyk[:, :, :3]) * k) >> 8)).astype(np.uint8)
    return np.asarray(image.convert("RGB")).copy()


# --- SAM ------------------------------------------------------------------------------------------


class SamTransform:
    """RGB uint8 ``[H, W, 3]`` -> SAM's input as it travels: the pixels ``[3, H, W]`` uint8
    (channels first, a view of the array) and (h', w'), the size they are resized to.

    The resize (longest side to ``image_size``, Pillow's bilinear), normalisation and padding
    happen on the model's device (:func:`utils.sam_input.sam_encoder_input`), with the numbers of
    :meth:`resize`, which does the resize with Pillow on the CPU.
    """

    def __init__(self, image_size: int = 1024) -> None:  # SAM's encoder input side
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.image_size = image_size

    def resize_shape(self, image: np.ndarray) -> tuple[int, int]:
        """(h', w') with max(h', w') = image_size; ValueError when a side would be 0 pixels."""
        _check_rgb(image)
        height, width = longest_side_shape(image.shape[0], image.shape[1], self.image_size)
        if 0 in (height, width):
            raise ValueError(
                f"a {image.shape[1]}x{image.shape[0]} image is too narrow to scale to "
                f"{self.image_size} pixels on its long side."
            )
        return height, width

    def resize(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 -> [h', w', 3] uint8 with max(h', w') = image_size, with Pillow."""
        height, width = self.resize_shape(image)
        if (height, width) == image.shape[:2]:
            return image.copy()
        resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        return np.array(resized)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        size = self.resize_shape(image)
        if not image.flags.writeable:  # torch refuses to share a read-only array
            image = image.copy()
        return torch.from_numpy(image).permute(2, 0, 1), size


# --- CLIP -----------------------------------------------------------------------------------------


def _size_pair(value: Any, name: str, source: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    raise ValueError(f"{source}: {name} must be an int or {{height, width}}, got {value!r}.")


@dataclass(frozen=True)
class ClipTransform:
    """transformers' ``CLIPImageProcessor`` (PIL path) for one RGB uint8 image -> [3, h, w] float32.

    Shortest edge to ``shortest_edge`` (long edge ``int(S * long / short)``), centre crop to
    ``crop_size``, ``x * rescale_factor``, ``(x - mean) / std``, channels first. Build it from a
    vision tower directory with :meth:`from_pretrained`.
    """

    shortest_edge: int | None = 224  # resize target of the shorter side (None: use resize_hw)
    resize_hw: tuple[int, int] | None = None  # exact (h, w) resize when configured that way
    crop_size: tuple[int, int] = (224, 224)  # (h, w) of the centre crop
    resample: int = Image.Resampling.BICUBIC  # PIL filter id (3 = bicubic)
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_first_directory(cls, *directories: str | os.PathLike | None) -> ClipTransform | None:
        """:meth:`from_pretrained` of the first of ``directories`` (vision tower directories;
        None passed over) that holds a ``preprocessor_config.json``; None when none does."""
        for directory in directories:
            if directory and (Path(directory) / "preprocessor_config.json").is_file():
                return cls.from_pretrained(directory)
        return None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ClipTransform:
        """Read ``preprocessor_config.json`` from a vision tower directory (or the file itself)."""
        path = Path(path)
        config_file = path / "preprocessor_config.json" if path.is_dir() else path
        if not config_file.is_file():
            raise ValueError(f"No preprocessor_config.json found at {str(path)!r}.")
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
        source = str(config_file)
        size = config.get("size", 224)
        shortest_edge, resize_hw = None, None
        if isinstance(size, int):
            shortest_edge = size
        elif isinstance(size, dict) and "shortest_edge" in size:
            shortest_edge = int(size["shortest_edge"])
        else:
            resize_hw = _size_pair(size, "size", source)
        defaults = cls()
        return cls(
            shortest_edge=shortest_edge,
            resize_hw=resize_hw,
            crop_size=_size_pair(config.get("crop_size", 224), "crop_size", source),
            resample=int(config.get("resample", defaults.resample)),
            rescale_factor=float(config.get("rescale_factor", defaults.rescale_factor)),
            image_mean=tuple(float(v) for v in config.get("image_mean", defaults.image_mean)),
            image_std=tuple(float(v) for v in config.get("image_std", defaults.image_std)),
            do_resize=bool(config.get("do_resize", True)),
            do_center_crop=bool(config.get("do_center_crop", True)),
            do_rescale=bool(config.get("do_rescale", True)),
            do_normalize=bool(config.get("do_normalize", True)),
        )

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Size after the resize step."""
        if self.resize_hw is not None:
            return self.resize_hw
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 -> [h, w, 3] uint8 (shortest edge resized, PIL filter ``resample``)."""
        _check_rgb(image)
        height, width = self.output_hw(image.shape[0], image.shape[1])
        resized = Image.fromarray(image).resize((width, height), resample=self.resample)
        return np.asarray(resized).copy()

    def center_crop(self, image: np.ndarray) -> np.ndarray:
        """Centre crop to ``crop_size``; a smaller image is zero-padded around first (as HF does)."""
        crop_h, crop_w = self.crop_size
        height, width = image.shape[:2]
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        if top >= 0 and left >= 0:
            return image[top : top + crop_h, left : left + crop_w].copy()
        new_h, new_w = max(crop_h, height), max(crop_w, width)
        pad_top, pad_left = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
        padded = np.zeros((new_h, new_w, *image.shape[2:]), dtype=image.dtype)
        padded[pad_top : pad_top + height, pad_left : pad_left + width] = image
        top, left = top + pad_top, left + pad_left
        return padded[max(0, top) : top + crop_h, max(0, left) : left + crop_w].copy()

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """[H, W, 3] uint8 RGB -> [3, crop_h, crop_w] float32."""
        _check_rgb(image)
        if self.do_resize:
            image = self.resize(image)
        if self.do_center_crop:
            image = self.center_crop(image)
        table = self._value_table  # [256, 3]
        out = np.empty((3, *image.shape[:2]), dtype=np.float32)  # [3, h, w]
        for channel in range(3):
            np.take(table[:, channel], image[:, :, channel], out=out[channel])
        return torch.from_numpy(out)

    @functools.cached_property
    def _value_table(self) -> np.ndarray:
        """[256, 3] float32: each channel's output for each input value.

        Rescale in float64 then cast, normalise in float32 (the operation order of
        transformers), applied to every possible value once; a per-pixel lookup then gives
        the same numbers as the arithmetic on the whole image, at a fraction of its cost.
        """
        values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # [256, 3]
        x = values * self.rescale_factor if self.do_rescale else values
        x = x.astype(np.float32)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)
            std = np.asarray(self.image_std, dtype=np.float32)
            x = (x - mean) / std
        return x


# --- both ---------------------------------------------------------------------------------------


@dataclass
class PreparedImage:
    """One image ready for the model (batch dimension included)."""

    images_clip: torch.Tensor  # [1, 3, h, w] CLIP input
    images: torch.Tensor  # [1, 3, H, W] uint8 SAM input: the pixels (resized on the device)
    resize: tuple[int, int]  # (h', w'), the size SAM's input resizes it to
    original_size: tuple[int, int]  # (H, W)


@dataclass
class ImagePreprocessor:
    """The CLIP and SAM transforms together: what chat, evaluation and the Python API feed."""

    clip: ClipTransform
    sam: SamTransform

    def __call__(self, image: np.ndarray) -> PreparedImage:
        """RGB uint8 [H, W, 3] -> :class:`PreparedImage`."""
        sam_input, resize = self.sam(image)
        return PreparedImage(
            images_clip=self.clip(image).unsqueeze(0),
            images=sam_input.unsqueeze(0),
            resize=resize,
            original_size=(image.shape[0], image.shape[1]),
        )
