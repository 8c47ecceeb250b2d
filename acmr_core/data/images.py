"""Image hygiene shared by the app, the CLI and feature extraction.

Every image the project touches goes through :func:`load_image` (a path, raw bytes or an already opened PIL
image), which returns a plain 8-bit RGB image or raises :class:`~acmr_core.errors.ImageError` with a one-line
message. It handles:

* EXIF orientation (phone photos are stored sideways with a rotation tag);
* embedded ICC colour profiles (CMYK print JPEGs, wide-gamut phone photos): converted to sRGB;
* every Pillow mode: grayscale, 1-bit, CMYK, palette (with or without transparency), RGBA / LA / PA
  (composited on white, which is what a viewer shows), 16-bit and 32-bit integer and float images (rescaled,
  not clipped, a band of rows at a time so they cost no more than an 8-bit image), YCbCr / LAB / HSV;
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
import re
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
        name = describe_source(source)
        check_pixel_count(source.size, max_pixels, name)
        # _first_frame copies, so the caller's image is left alone and the copy is ours to transform.
        return _owned_to_rgb(_first_frame(source, name))
    name = describe_source(source)
    stream = _open_stream(source, name)
    try:
        image = _open_checked(stream, name, max_pixels)
        try:
            _decode_first_frame(image, name)
            rgb = _owned_to_rgb(image)
            # An RGB file comes back as the opened image itself, whose pixels close() below frees.
            return rgb.copy() if rgb is image else rgb
        finally:
            image.close()
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
        raise too_large(name, width * height, max_pixels, f"{width}×{height} = ")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"{name}: image is {width}×{height}, a strip more than {MAX_ASPECT_RATIO} times longer than wide "
            "(scaling it for the model would cost gigabytes); crop it to the subject first"
        )


def too_large(name: str, pixels: int | None, max_pixels: int, size: str = "") -> ImageError:
    """The one message for an image over the pixel limit, whoever noticed it first (our header check or
    Pillow's own decompression-bomb guard, whose limit and wording differ): ``size`` is ``"W×H = "`` when
    known, ``pixels`` None when not even the count is."""
    count = f"{size}{pixels / 1e6:.1f} MP" if pixels is not None else "larger than that"
    return ImageError(
        f"{name}: image is too large: {count}, above the limit of {max_pixels / 1e6:.0f} MP "
        "(refused as a possible decompression bomb); downscale it first"
    )


def _bomb_pixels(error: Exception) -> int | None:
    """The pixel count Pillow's decompression-bomb error or warning states ("Image size (N pixels) ...")."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else None


def _effective_limit(max_pixels: int) -> int:
    """The limit an image actually met: ours, or Pillow's bomb guard where that is lower (a caller's larger
    ``max_pixels``)."""
    return min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)


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
    if _is_high_depth(mode):
        return _high_depth_to_gray(image).convert("RGB")
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
        raise too_large(name, _bomb_pixels(error), _effective_limit(max_pixels)) from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name}: the image header is corrupt ({error}); use another image") from None
    try:
        check_pixel_count(image.size, max_pixels, name)
    except ImageError:
        image.close()
        raise
    return image


def _decode_first_frame(image: Image.Image, name: str) -> None:
    """Decode the first frame of ``image`` (the only one for still images) into memory, in place."""
    # Truncated files must fail loudly; a half-grey decoded photo would silently poison features.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images may not be detected")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise too_large(name, _bomb_pixels(error), _effective_limit(DEFAULT_MAX_PIXELS)) from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name}: the image is truncated or corrupt ({error}); use another image") from None


def _first_frame(image: Image.Image, name: str) -> Image.Image:
    """A decoded copy of the first frame of ``image``, detached from it (it keeps info: EXIF, palette)."""
    _decode_first_frame(image, name)
    return image.copy()


def _owned_to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB from a decoded image this module owns: it may be rotated in place and closed.

    At the 64 MP cap every full-size copy costs 128–256 MB, so none is made that is not needed: the rotation
    happens in place (and only when the EXIF tag asks for one), and a high-depth image's pixels are freed
    as soon as its 8-bit grey version exists, before the larger RGB image is made. The result may be
    ``image`` itself (an RGB image needs no conversion).
    """
    _upright_in_place(image)
    if not _is_high_depth(image.mode):
        return to_rgb(image)
    gray = _high_depth_to_gray(image)
    image.close()
    return gray.convert("RGB")


def _upright_in_place(image: Image.Image) -> None:
    """Apply the EXIF orientation tag; a broken EXIF block must not cost the image, so it is then ignored."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as error:
        log.warning("ignoring unreadable EXIF orientation (%s)", error)


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


def _is_high_depth(mode: str) -> bool:
    """16/32-bit integer (I, I;16, I;16B…) and 32-bit float (F) modes."""
    return mode.startswith("I") or mode == "F"


#: Pixels per row band of the high-depth conversion. Its float64 temporaries are then about 0.5 MB each,
#: whatever the image: at full size they cost 2.4 GB for a 64 MP image (issue 27).
_BAND_PIXELS = 1 << 16


def _high_depth_to_gray(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images as 8-bit grey: Pillow's convert('L') clips at 255, so rescale.

    16-bit data (I;16* modes, or integer images with values above 255) maps 65535 → 255; float images map
    their range (NaN ignored) onto 0–255, NaN → 0. The arithmetic is the same float64 as on a whole image, but
    done one band of rows at a time into an 8-bit image, so the extra memory is that of the result.
    """
    width, height = image.size
    rows = max(1, _BAND_PIXELS // width)
    tops = range(0, height, rows)

    def band(top: int) -> Image.Image:  # cropped one at a time: together they would copy the image
        return image.crop((0, top, width, min(top + rows, height)))

    is_float = image.mode == "F"
    low = high = 0.0
    if is_float:
        # fmin/fmax skip NaN without warnings (Pillow's getextrema does not skip a NaN first pixel).
        low = high = np.nan
        for top in tops:
            values = np.asarray(band(top))
            low = np.fmin(low, np.fmin.reduce(values, axis=None))
            high = np.fmax(high, np.fmax.reduce(values, axis=None))
        low, high = float(low), float(high)
    # 16-bit data: I;16* modes, or 16-bit PNGs and TIFFs that Pillow opens as 32-bit 'I'.
    sixteen_bit = not is_float and (image.mode.startswith("I;16") or image.getextrema()[1] > 255)

    gray = Image.new("L", image.size)
    for top in tops:
        # A fresh array (the dtype differs from the band's), worked on in place: a new array per operation
        # would cost a page-faulted allocation each time.
        values = np.asarray(band(top), dtype=np.float64)
        if is_float and high > low:
            values -= low
            values /= high - low
            values *= 255.0
        elif is_float:  # an all-NaN or constant image becomes black, as NaN pixels do
            values[:] = 0.0
        elif sixteen_bit:
            values /= 257.0
        np.nan_to_num(values, copy=False)
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        gray.paste(Image.fromarray(values.astype(np.uint8)), (0, top))
    return gray
