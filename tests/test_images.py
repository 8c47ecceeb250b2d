"""Image hygiene: every odd mode becomes upright 8-bit RGB; bad files get a one-line ImageError."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from acmr_core.data import images
from acmr_core.data.images import DEFAULT_MAX_PIXELS, MAX_ASPECT_RATIO, load_image, resized_pixels, to_rgb
from acmr_core.errors import ImageError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width × height`` RGB pixels whose data is a few bytes: the classic bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert image.mode == "RGB"
    assert image.size == size
    return np.asarray(image)


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


# ------------------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_rgb(mode: str) -> None:
    image = Image.new(mode, (6, 4), 255 if mode == "L" else 1)
    pixels = assert_rgb(load_image(encode(image, "PNG")), (6, 4))
    assert (pixels == 255).all()


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk_red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    pixels = assert_rgb(load_image(encode(cmyk_red, "JPEG", quality=95)), (16, 16))
    assert close_to(pixels[8, 8], RED, tolerance=20)


def test_rgba_is_composited_on_white() -> None:
    image = Image.new("RGBA", (4, 2), (0, 0, 255, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black must show as white, not black
    pixels = assert_rgb(load_image(encode(image, "PNG")), (4, 2))
    assert tuple(pixels[0, 0]) == WHITE
    assert tuple(pixels[0, 1]) == BLUE


def test_la_is_composited_on_white() -> None:
    image = Image.new("LA", (3, 3), (0, 255))
    image.putpixel((1, 1), (0, 0))
    pixels = assert_rgb(load_image(encode(image, "PNG")), (3, 3))
    assert tuple(pixels[1, 1]) == WHITE
    assert tuple(pixels[0, 0]) == (0, 0, 0)


def test_palette_with_and_without_transparency() -> None:
    plain = Image.new("RGB", (4, 4), GREEN).convert("P")
    assert tuple(assert_rgb(load_image(encode(plain, "PNG")), (4, 4))[2, 2]) == GREEN

    transparent = Image.new("P", (4, 4), 1)
    transparent.putpalette([*GREEN, *RED] + [0] * (256 * 3 - 6))
    transparent.putpixel((0, 0), 0)
    transparent.info["transparency"] = 0  # palette entry 0 (green) is transparent
    pixels = assert_rgb(load_image(encode(transparent, "PNG", transparency=0)), (4, 4))
    assert tuple(pixels[0, 0]) == WHITE
    assert tuple(pixels[3, 3]) == RED


def test_16_bit_grayscale_is_rescaled_not_clipped() -> None:
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    pixels = assert_rgb(load_image(encode(image, "PNG")), (3, 1))
    assert pixels[0, :, 0].tolist() == [0, 128, 255]


def test_32_bit_integer_and_float_images() -> None:
    as_int = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert as_int.mode == "I"
    assert to_rgb(as_int).getpixel((1, 0)) == WHITE

    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert as_float.mode == "F"
    assert [to_rgb(as_float).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


# ------------------------------------------------------------------------------------------ high depth


def expected_16_bit(values: np.ndarray) -> np.ndarray:
    return np.rint(values / 257.0).astype(np.uint8)


def expected_float(values: np.ndarray) -> np.ndarray:
    low, high = np.nanmin(values), np.nanmax(values)
    return np.nan_to_num(np.rint((values - low) / (high - low) * 255.0)).astype(np.uint8)


def gradient_16_bit(width: int, height: int) -> np.ndarray:
    """Every 16-bit level across the width, shifted per row, so that each band of rows differs."""
    columns = np.arange(width, dtype=np.uint32) * 65535 // max(width - 1, 1)
    return ((columns[None, :] + 97 * np.arange(height, dtype=np.uint32)[:, None]) % 65536).astype(np.uint16)


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of 2 rows on the test images, so that the band-by-band conversion is exercised."""
    monkeypatch.setattr(images, "_BAND_PIXELS", 64)


def test_16_bit_png_matches_the_rescaled_values(small_bands: None) -> None:
    values = gradient_16_bit(40, 9)
    pixels = assert_rgb(load_image(encode(Image.fromarray(values), "PNG")), (40, 9))
    expected = expected_16_bit(values.astype(np.float64))
    assert (pixels == expected[..., None]).all()


def test_i16_images_of_every_byte_order_match(small_bands: None) -> None:
    values = gradient_16_bit(33, 7)
    expected = expected_16_bit(values.astype(np.float64))
    for mode, dtype in (("I;16", "<u2"), ("I;16B", ">u2")):
        image = Image.frombytes(mode, (33, 7), values.astype(dtype).tobytes())
        assert (assert_rgb(load_image(image), (33, 7)) == expected[..., None]).all(), mode
    # A 32-bit 'I' image whose values stay within 0–255 is already 8-bit: kept as is, not divided by 257.
    low = Image.fromarray(np.arange(7 * 33, dtype=np.int32).reshape(7, 33) % 256)
    assert (np.asarray(to_rgb(low))[..., 0] == np.asarray(low)).all()


def test_float_image_is_scaled_over_its_range_and_nan_is_black(small_bands: None) -> None:
    values = np.linspace(-2.0, 6.0, 30 * 7, dtype=np.float32).reshape(7, 30)
    values[0, 0] = np.nan  # the first pixel: the range must still be found
    values[4, 17] = np.nan
    pixels = assert_rgb(load_image(encode(Image.fromarray(values), "TIFF")), (30, 7))
    expected = expected_float(values.astype(np.float64))
    assert (pixels == expected[..., None]).all()
    assert tuple(pixels[0, 0]) == tuple(pixels[4, 17]) == (0, 0, 0)
    assert pixels.max() == 255
    for constant in (np.full((5, 30), 3.5, np.float32), np.full((5, 30), np.nan, np.float32)):
        assert (np.asarray(to_rgb(Image.fromarray(constant))) == 0).all()


def test_high_depth_image_is_rotated_by_its_exif_tag(tmp_path: Path) -> None:
    values = np.array([[0, 65535]], dtype=np.uint16)  # 2×1: black, white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise
    path = tmp_path / "tagged.png"
    Image.fromarray(values).save(path, exif=exif.tobytes())
    pixels = assert_rgb(load_image(path), (1, 2))
    assert tuple(pixels[:, 0, 0]) == (0, 255)
    with Image.open(path) as opened:  # an open image given by the caller is left as it was
        assert_rgb(load_image(opened), (1, 2))
        assert opened.size == (2, 1) and opened.mode.startswith("I;16")


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_high_depth_decode_never_holds_a_full_size_array(tmp_path: Path, fmt: str) -> None:
    """Issue 27 D1: the conversion ran in float64 on the whole image (+2.4 GB for 64 MP). Pillow's own
    buffers are invisible to tracemalloc; NumPy's are traced, so a whole-image float64 array (8 bytes per
    pixel, several times over) shows up, while bands keep the peak under one byte per pixel."""
    width, height = 2000, 2000
    values = gradient_16_bit(width, height)
    source = Image.fromarray(values if fmt == "PNG" else values.astype(np.float32))
    path = tmp_path / f"large.{fmt.lower()}"
    source.save(path, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
    tracemalloc.start()
    try:
        loaded = load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded.mode == "RGB" and loaded.size == (width, height)
    assert peak < width * height, f"{peak / 1e6:.1f} MB traced for a {width * height / 1e6:.0f} MP image"
    # The values span 0–65535, so the float image's min/max scaling is the 16-bit one too.
    assert (np.asarray(loaded)[..., 0] == expected_16_bit(values.astype(np.float64))).all()


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    pixels = assert_rgb(load_image(data), (8, 8))
    assert close_to(pixels[4, 4], RED)


def test_exif_orientation_is_applied() -> None:
    # Stored landscape: left half red, right half blue; EXIF 6 = "rotate 90° clockwise to display".
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = assert_rgb(load_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes())), (20, 40))
    assert close_to(pixels[5, 10], RED)  # the left half is now on top
    assert close_to(pixels[35, 10], BLUE)


def test_accepts_paths_bytes_and_open_images(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGBA", (5, 7), (*RED, 255)).save(path)
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        assert tuple(assert_rgb(load_image(source), (5, 7))[0, 0]) == RED


# ------------------------------------------------------------------------------------------------ bad files


def test_zero_byte_file_and_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(ImageError, match=r"cut\.jpg: the image is truncated or corrupt"):
        load_image(truncated)


def test_non_image_and_missing_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.png: not an image"):
        load_image(text)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gif"
    bad.write_bytes(b"GIF89a" + b"\xff" * 20)
    for source in (bad, b"", b"%PDF-1.4", png_header_only(20_000, 20_000)):
        with pytest.raises(ImageError) as caught:
            load_image(source)
        assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------------ bombs


def test_file_names_in_messages_stay_short_and_printable(tmp_path: Path) -> None:
    odd = tmp_path / ("line\nbreak" + "x" * 200 + ".png")
    odd.write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        load_image(odd)
    message = str(caught.value)
    assert message.startswith("line?break") and "\n" not in message
    assert len(message.split(":", 1)[0]) == 80


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (20_000, 20_000),  # above twice Pillow's limit: Pillow's DecompressionBombError, at open
        (10_000, 10_000),  # between Pillow's warning and error thresholds: its warning, made an error
        (9_000, 9_000),  # under Pillow's limits, over ours: our own check
    ],
)
def test_huge_png_header_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    # Decoding would allocate up to 1.2 GB; any decode attempt fails the test: "refused" means "not decoded".
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert width * height > DEFAULT_MAX_PIXELS
    # One message in the project's words and with its one limit, whichever guard noticed first (issue 34).
    megapixels = f"{width * height / 1e6:.1f} MP"
    limit = f"above the limit of {DEFAULT_MAX_PIXELS / 1e6:.0f} MP"
    with pytest.raises(ImageError) as caught:
        load_image(png_header_only(width, height))
    message = str(caught.value)
    assert message.startswith("image: image is too large: ") and megapixels in message and limit in message
    assert message.endswith("(refused as a possible decompression bomb); downscale it first")
    assert "pixels" not in message and "DOS" not in message  # none of Pillow's own wording


def test_pillow_own_bomb_guard_is_reported_cleanly() -> None:
    # With our limit raised past Pillow's, Pillow's DecompressionBombError still becomes our message, naming
    # the limit the image actually met (Pillow's, then).
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=rf"too large: 400.0 MP, above the limit of {limit / 1e6:.0f} MP"):
        load_image(png_header_only(20_000, 20_000), max_pixels=10**12)


def test_real_compressed_bomb_is_refused_with_a_lower_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 20_000  # tiny file, 9 MP once decoded
    refused = r"bomb\.png: image is too large: 3000×3000 = 9.0 MP, above the limit of 1 MP"
    with pytest.raises(ImageError, match=refused):
        load_image(bomb, max_pixels=1_000_000)
    assert load_image(bomb).size == (3000, 3000)  # and fine under the default limit


def test_open_pil_image_is_also_size_checked() -> None:
    with pytest.raises(ImageError, match="above the limit"):
        load_image(Image.new("L", (200, 200)), max_pixels=100)


# ------------------------------------------------------------------------------------------ colour profiles


def swapped_primaries_profile() -> bytes:
    """A valid RGB ICC profile whose red and green primaries are swapped (built from Pillow's sRGB profile):
    a pixel stored as pure red means green under it."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    entries = {}
    for index in range(struct.unpack(">I", icc[128:132])[0]):
        start = 132 + 12 * index
        entries[bytes(icc[start : start + 4])] = start
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    icc[red + 4 : red + 12], icc[green + 4 : green + 12] = (
        icc[green + 4 : green + 12],
        icc[red + 4 : red + 12],
    )
    for text in (b"sRGB", "sRGB".encode("utf-16-be")):  # renamed, so it is not taken for plain sRGB
        icc = icc.replace(text, text.replace(b"s", b"x").replace(b"R", b"Q"))
    return bytes(icc)


def test_an_embedded_colour_profile_is_applied() -> None:
    stored_red = Image.new("RGB", (8, 8), (220, 20, 20))
    plain = assert_rgb(load_image(encode(stored_red, "PNG")), (8, 8))
    managed = assert_rgb(
        load_image(encode(stored_red, "PNG", icc_profile=swapped_primaries_profile())), (8, 8)
    )
    assert close_to(plain[0, 0], (220, 20, 20), tolerance=0)
    assert managed[0, 0, 1] > 150 and managed[0, 0, 0] < 100  # shown as the profile means it: green


def test_srgb_and_unusable_profiles_leave_the_pixels_alone(caplog: pytest.LogCaptureFixture) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    colour = Image.new("RGB", (4, 4), (10, 120, 200))
    for profile in (srgb, b"definitely not an ICC profile"):
        pixels = assert_rgb(load_image(encode(colour, "PNG", icc_profile=profile)), (4, 4))
        assert close_to(pixels[0, 0], (10, 120, 200), tolerance=0)
    assert "colour profile" in caplog.text  # the broken one is reported, not fatal


# ------------------------------------------------------------------------------------- bounded resize cost


@pytest.mark.parametrize(("width", "height"), [(64_000, 1), (1, 16_000), (2_100, 100)])
def test_extreme_strips_are_refused_from_the_header_before_decoding(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    # A 64000×1 strip is under the megapixel cap, but resizing its short side to 256 would make it
    # 16 million × 256 pixels; it must be refused from the header, without decoding (or resizing) anything.
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded before the aspect-ratio check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert width * height <= DEFAULT_MAX_PIXELS
    with pytest.raises(ImageError, match=rf"{width}×{height}.*more than {MAX_ASPECT_RATIO} times"):
        load_image(png_header_only(width, height))


def test_the_widest_accepted_strip_loads_and_bounds_the_resized_size() -> None:
    widest = Image.new("RGB", (MAX_ASPECT_RATIO * 10, 10), RED)
    assert load_image(encode(widest, "PNG")).size == (MAX_ASPECT_RATIO * 10, 10)
    # Whatever the accepted image, a resize to a short side s costs at most s² × MAX_ASPECT_RATIO pixels.
    assert resized_pixels(widest.size, 256) == 256 * 256 * MAX_ASPECT_RATIO
    assert resized_pixels((1, MAX_ASPECT_RATIO), 256) == 256 * 256 * MAX_ASPECT_RATIO
    assert resized_pixels((640, 480), 256) == 256 * 341


def test_an_open_strip_image_is_refused_too() -> None:
    with pytest.raises(ImageError, match="crop it to the subject"):
        load_image(Image.new("L", (MAX_ASPECT_RATIO * 5 + 1, 5)))
