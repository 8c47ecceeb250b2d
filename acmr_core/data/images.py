"""Image hygiene shared by the app, the CLI and feature extraction.

Every image the project touches goes through :func:`load_image` (a path, raw bytes or an already opened PIL
image), which returns a plain 8-bit RGB image or raises :class:`~acmr_core.errors.ImageError` with a one-line
message. It handles:

* EXIF orientation (phone photos are stored sideways with a rotation tag);
* embedded ICC colour profiles (CMYK print JPEGs, wide-gamut phone photos): converted to sRGB;
* every Pillow mode: grayscale, 1-bit, CMYK, palette (with or without transparency), RGBA / LA / PA
  (composited on white, which is what a viewer shows), 16-bit and 32-bit integer and float images (rescaled,
  not clipped), YCbCr / LAB / HSV;
* animated images (GIF, APNG, WebP): the first frame;
* decompression bombs: the pixel count is read from the header and checked *before* any pixel is decoded,
  so a 20000×20000 PNG of a few hundred bytes is refused in microseconds without allocating it;
* extreme aspect ratios, also from the header: the backbone's eval transform scales the *short* side up or
  down to ~256 pixels, so a 64000×1 strip would become 16 million × 256 pixels (17.7 GB measured). With the
  ratio capped at :data:`MAX_ASPECT_RATIO`, any resize to a short side ``s`` yields at most
  ``s² × MAX_ASPECT_RATIO`` pixels (:func:`resized_pixels`), whatever the file;
* empty, truncated and non-image files.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from acmr_core.errors import ImageError

log = logging.getLogger(__name__)

#: Largest image accepted by default, in pixels (width × height). 64 MP covers every common camera (an
#: 8000×8000 image) while keeping a decoded RGB image under 200 MB.
DEFAULT_MAX_PIXELS = 64_000_000

#: Largest accepted ratio of the long side to the short side. Panoramas are 2:1 to 8:1; beyond 20:1 the
#: backbone's centre crop would keep under 5 % of the picture anyway. Bounds the resized size (see above).
MAX_ASPECT_RATIO = 20

#: File extensions treated as images when scanning folders.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

#: Colour used under transparent pixels (what an image viewer shows on a white page).
BACKGROUND_RGB = (255, 255, 255)

ImageSource = str | Path | bytes | bytearray | Image.Image

# Errors Pillow raises for broken or truncated data while reading headers or decoding pixels.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError)


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` and return it as an 8-bit RGB image, upright, with transparency flattened on white.

    Raises :class:`ImageError` (one line, naming the image) for a missing, empty, non-image, truncated or
    too-large image.
    """
    if isinstance(source, Image.Image):
        check_pixel_count(source.size, max_pixels, describe_source(source))
        return to_rgb(_upright(_first_frame(source, describe_source(source))))
    name = describe_source(source)
    stream = _open_stream(source, name)
    try:
        image = _open_checked(stream, name, max_pixels)
        try:
            frame = _first_frame(image, name)
        finally:
            image.close()
        return to_rgb(_upright(frame))
    finally:
        stream.close()


def describe_source(source: ImageSource | IO[bytes]) -> str:
    """A short, printable name for ``source`` to put in (one-line) error messages."""
    if isinstance(source, (str, Path)):
        name = Path(source).name or str(source)
    elif isinstance(source, Image.Image) and getattr(source, "filename", ""):
        name = Path(source.filename).name
    else:
        return "image"
    printable = "".join(character if character.isprintable() else "?" for character in name)
    return printable if len(printable) <= 80 else printable[:77] + "..."


def check_pixel_count(size: tuple[int, int], max_pixels: int, name: str = "image") -> None:
    """Refuse an image whose ``width × height`` exceeds ``max_pixels`` or whose sides differ more than
    :data:`MAX_ASPECT_RATIO` times (checked on the header's size, before any decoding or resizing)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has no pixels ({width}×{height}); use another image")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image is {width}×{height} = {width * height / 1e6:.1f} MP, above the limit of "
            f"{max_pixels / 1e6:.0f} MP (refused as a possible decompression bomb); downscale it first"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"{name}: image is {width}×{height}, a strip more than {MAX_ASPECT_RATIO} times longer than wide "
            "(scaling it for the model would cost gigabytes); crop it to the subject first"
        )


def resized_pixels(size: tuple[int, int], short_side: int) -> int:
    """Pixels after scaling ``size`` so that its short side is ``short_side`` (what a timm eval resize does).

    For an image :func:`check_pixel_count` accepted this is at most ``short_side² × MAX_ASPECT_RATIO``.
    """
    width, height = size
    return short_side * round(short_side * max(width, height) / min(width, height))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white, high bit depths rescaled,
    and RGB or CMYK pixels with an embedded colour profile converted to sRGB."""
    managed = _embedded_profile_to_srgb(image)
    if managed is not None:
        return managed
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image.convert("RGBA"))
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode == "L" and "transparency" in image.info:
        return _flatten_alpha(image.convert("RGBA"))
    # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX: Pillow's own conversions are right for these.
    return image.convert("RGB")


def _open_stream(source: str | Path | bytes | bytearray, name: str) -> IO[bytes]:
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError(f"{name}: the file is empty (0 bytes); upload or choose a real image")
        return io.BytesIO(bytes(source))
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{name}: file not found ({path}); check the path")
    if not path.is_file():
        raise ImageError(f"{name}: not a file ({path}); give the path of an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes); upload or choose a real image")
    try:
        return path.open("rb")
    except OSError as error:
        raise ImageError(
            f"{name}: cannot read the file ({error.strerror or error}); check its permissions"
        ) from None


def _open_checked(stream: IO[bytes], name: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only), then refuse oversized images before decoding a single pixel."""
    try:
        # Pillow warns (and above 2× its own limit, raises) about possible bombs at open time; turning the
        # warning into an error keeps its message out of logs and lets us answer with our own.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image, or a format Pillow cannot read; "
            "use a JPEG, PNG, GIF, BMP, TIFF or WebP file"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{name}: image is too large ({error}); "
            "refused as a possible decompression bomb, downscale it first"
        ) from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name}: the image header is corrupt ({error}); use another image") from None
    try:
        check_pixel_count(image.size, max_pixels, name)
    except ImageError:
        image.close()
        raise
    return image


def _first_frame(image: Image.Image, name: str) -> Image.Image:
    """Decode the first frame of ``image`` (the only one for still images) into memory."""
    # Truncated files must fail loudly; a half-grey decoded photo would silently poison features.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images may not be detected")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        # copy() detaches the frame from the file so the stream can be closed; it keeps info (EXIF, palette).
        frame = image.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name}: image is too large ({error}); downscale it first") from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name}: the image is truncated or corrupt ({error}); use another image") from None
    return frame


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block must not cost the image, so it is then ignored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception as error:
        log.warning("ignoring unreadable EXIF orientation (%s)", error)
        return image


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _embedded_profile_to_srgb(image: Image.Image) -> Image.Image | None:
    """``image`` converted from its embedded ICC profile to sRGB, or None where there is nothing to do.

    The backbone was trained on sRGB pixels. A CMYK JPEG's profile is the only faithful way to its colours
    (Pillow's plain CMYK conversion ignores the ink model), and wide-gamut phone photos (Display P3, Adobe
    RGB) read as sRGB come out dull. An unreadable profile falls back to the plain conversion.
    """
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "CMYK"):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None  # already sRGB: converting would only cost time
        return ImageCms.profileToProfile(image, profile, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        log.warning("ignoring an unusable embedded colour profile (%s)", error)
        return None


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, BACKGROUND_RGB)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images: Pillow's convert('L') clips at 255, so rescale explicitly."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    elif values.max(initial=0.0) > 255.0 or image.mode.startswith("I;16"):
        # 16-bit data (I;16* modes, or 16-bit PNGs that Pillow opens as 32-bit 'I'): 65535 → 255.
        scaled = values / 257.0
    else:
        scaled = values
    gray = np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
