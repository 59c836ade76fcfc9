"""Image intake and output: decode, validate, normalise and encode game art.

Owns the one normalised in-memory form every other part works on:

* ``LoadedImage.rgb``   ``(H, W, 3)`` ``uint8`` colour in sRGB. 16-bit greyscale PNGs keep their
  precision as ``uint16`` (the three channels are equal). Greyscale and palette inputs are
  expanded to three channels.
* ``LoadedImage.alpha`` ``(H, W)`` with the same dtype as ``rgb``, or ``None`` when the input
  has no transparency at all (palette transparency, LA, PA and RGBA all become alpha).

Decoding is guarded: the header dimensions are checked against :class:`ImageLimits` before a
single pixel is decompressed, Pillow's decompression-bomb error is translated, truncated files
are refused (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays ``False``), EXIF orientation is applied
and embedded ICC profiles are converted to sRGB. Every refusal is an
:class:`~service.core.errors.ImageError` with one of the codes ``image_empty``,
``image_corrupt``, ``image_truncated``, ``image_unsupported``, ``image_too_large``,
``image_bomb``, ``output_too_large``.

Pure: bytes in, arrays out; no files, no settings, no logging.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from service.core import formats
from service.core.alpha import composite_on_matte, is_opaque
from service.core.errors import ImageError

#: Pillow format names we read, and the output formats we write (``service.core.formats``).
INPUT_FORMATS = formats.INPUT_FORMATS
OUTPUT_FORMATS = formats.OUTPUT_FORMATS
#: zlib level of PNG outputs unless the caller says otherwise (``AAT_PNG_COMPRESS_LEVEL``).
PNG_COMPRESS_LEVEL = 3
#: Decompressed bytes per compressed byte above which an oversize file counts as a bomb.
_BOMB_RATIO = 100


@dataclass(frozen=True)
class ImageLimits:
    """Size limits for inputs and outputs (the service fills them from its settings)."""

    max_input_pixels: int = 64_000_000
    max_input_side: int = 16384
    max_output_side: int = 16384


@dataclass
class LoadedImage:
    """A decoded input in the normalised form described in the module docstring."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str  # Pillow format name of the input, e.g. "PNG"
    mode: str  # Pillow mode of the input before normalisation, e.g. "P", "LA", "I;16"
    icc_converted: bool = False
    warnings: list[str] = field(default_factory=list)
    pixel_format: str | None = None  # a DDS input's block format, e.g. "DXT5", "BC5"

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe_image` learns from the header alone."""

    format: str
    mode: str
    width: int
    height: int


def _err(code: str, message: str) -> ImageError:
    return ImageError(" ".join(message.split()), code=code)  # always one line


def _open(data: bytes) -> Image.Image:
    """Open lazily (header only), translating Pillow's refusals to our codes."""
    if not data:
        raise _err("image_empty", "the file is empty (0 bytes); pick a real image file")
    _check_complete(data)
    try:
        with warnings.catch_warnings():
            # our own limits (checked next) decide; Pillow's warning would only add noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(INPUT_FORMATS))
    except Image.DecompressionBombError as exc:
        raise _err("image_bomb", "the image header declares an absurd size (a decompression "
                   "bomb); it was not decoded") from exc
    except UnidentifiedImageError as exc:
        other = _identify_other(data)
        if other:
            raise _err("image_unsupported", f"{other} files are not supported; export "
                       f"{formats.INPUT_NAMES}") from exc
        raise _err("image_corrupt", f"not a readable image (supported: {formats.INPUT_NAMES}); "
                   "check the file is not damaged or mislabelled") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise _err("image_corrupt", f"the image header is damaged ({exc}); re-export the "
                   "file") from exc


def _identify_other(data: bytes) -> str | None:
    """Name of an image format Pillow knows but we do not accept (TIFF, PSD, ...), if any."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return str(im.format)
    except Exception:  # anything unreadable is simply not another format  # noqa: BLE001
        return None


def _check_header(im: Image.Image, data: bytes, limits: ImageLimits) -> None:
    width, height = im.size
    if width < 1 or height < 1:
        raise _err("image_corrupt", f"the image declares a size of {width}x{height}; "
                   "re-export the file")
    pixels = width * height
    too_big = pixels > limits.max_input_pixels or max(width, height) > limits.max_input_side
    if not too_big:
        return
    if pixels * 3 > _BOMB_RATIO * len(data):
        raise _err("image_bomb", f"{len(data)} bytes claim to hold {width}x{height} pixels "
                   "(a decompression bomb); it was not decoded")
    raise _err("image_too_large", f"the input is {width}x{height}; the limit is "
               f"{limits.max_input_side} px per side and {limits.max_input_pixels} pixels; "
               "shrink it or raise AAT_MAX_INPUT_PIXELS / AAT_MAX_INPUT_SIDE")


def probe_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Read only the header: format, mode and size, checked against ``limits``."""
    im = _open(data)
    _check_header(im, data, limits)
    return ImageInfo(format=str(im.format), mode=im.mode, width=im.size[0], height=im.size[1])


def load_image(data: bytes, *, limits: ImageLimits, filename: str | None = None) -> LoadedImage:
    """Decode ``data`` into the normalised form; refuse bad input with an ``ImageError``."""
    im = _open(data)
    _check_header(im, data, limits)
    fmt, mode = str(im.format), im.mode
    pixel_format = getattr(im, "pixel_format", None) if fmt == "DDS" else None
    notes: list[str] = []
    frames = int(getattr(im, "n_frames", 1))
    if frames > 1:
        notes.append(f"{fmt} has {frames} frames; only the first frame is used")
    _decode(im, filename)
    if fmt == "PNG" and _png_bit_depth(data) == 16 and im.mode not in ("I", "I;16", "I;16B"):
        notes.append("16-bit colour was reduced to 8 bits per channel by the decoder")
    im = _orient(im)
    im, converted = _to_srgb(im, notes)
    rgb, alpha = normalise(im)
    return LoadedImage(rgb=rgb, alpha=alpha, format=fmt, mode=mode, icc_converted=converted,
                       pixel_format=str(pixel_format) if pixel_format else None,
                       warnings=notes)


def _decode(im: Image.Image, filename: str | None) -> None:
    name = filename or "the image"
    try:
        im.load()
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise _err("image_bomb", f"{name} expands to more memory than allowed; it was not "
                   "decoded") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).lower()
        if "truncated" in text or "end of file" in text or isinstance(exc, EOFError) or \
                "unexpected end" in text:
            raise _err("image_truncated", f"{name} is truncated (the file ends early); copy or "
                       "export it again") from exc
        raise _err("image_corrupt", f"{name} could not be decoded ({exc}); re-export the "
                   "file") from exc


def _check_complete(data: bytes) -> None:
    """Refuse files whose container says more bytes should follow (PNG IEND, WebP RIFF size)."""
    short = False
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        short = b"IEND" not in data[-64:]
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        short = len(data) < int.from_bytes(data[4:8], "little") + 8
    if short:
        raise _err("image_truncated", "the image is truncated (the file ends early); copy or "
                   "export it again")


def _png_bit_depth(data: bytes) -> int:
    """Bit depth from a PNG IHDR (byte 24), 8 when unreadable."""
    return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 8


def _orient(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # a damaged EXIF block must not reject a good image  # noqa: BLE001
        return im


def _to_srgb(im: Image.Image, notes: list[str]) -> tuple[Image.Image, bool]:
    """Convert an embedded ICC profile to sRGB; (image, whether it was converted)."""
    icc = im.info.get("icc_profile")
    if not icc:
        return im, False
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(src).lower():
            return im, False
        if im.mode in ("P", "PA") and src.profile.xcolor_space.strip() == "RGB":
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        if im.mode in ("RGB", "RGBA", "CMYK"):
            out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        elif im.mode in ("L", "LA") and src.profile.xcolor_space.strip() == "GRAY":
            rgb = im.convert("RGBA" if im.mode == "LA" else "RGB")
            return rgb, False  # grey profiles describe tone only; gamma ~2.2 like sRGB
        else:
            notes.append(f"the ICC profile was ignored for mode {im.mode}")
            return im, False
        dst = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
        assert converted is not None
        if im.mode == "RGBA" and converted.mode == "RGBA":
            converted.putalpha(im.getchannel("A"))
        return converted, True
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        notes.append(f"the embedded ICC profile could not be applied ({exc}); colours are "
                     "used as stored")
        return im, False


def normalise(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow image of any supported mode -> (rgb, alpha|None)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(im)
        if grey.min(initial=0) < 0 or grey.max(initial=0) > 65535:
            raise _err("image_unsupported", "32-bit integer images are not supported; export "
                       "8- or 16-bit PNG")
        grey = grey.astype(np.uint16)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode in ("1", "L", "CMYK", "YCbCr"):
        im = im.convert("RGB")
    elif mode not in ("RGB", "RGBA"):
        raise _err("image_unsupported", f"image mode {mode} is not supported; export 8-bit "
                   "RGB/RGBA, greyscale or palette, or 16-bit greyscale")
    arr = np.asarray(im)
    if im.mode == "RGBA":
        return np.ascontiguousarray(arr[:, :, :3]), np.ascontiguousarray(arr[:, :, 3])
    return np.ascontiguousarray(arr), None


def check_output_size(width: int, height: int, limits: ImageLimits) -> None:
    """Refuse an output larger than ``limits.max_output_side`` on a side."""
    if max(width, height) > limits.max_output_side:
        raise _err("output_too_large", f"the output would be {width}x{height}; the limit is "
                   f"{limits.max_output_side} px per side; choose a smaller scale or size")


def output_format_for(input_format: str, requested: str = "auto") -> str:
    """Output format: ``requested`` unless ``auto``, else the input's (BMP/GIF become PNG)."""
    if requested != "auto":
        if requested not in OUTPUT_FORMATS:
            raise _err("image_unsupported", f"cannot write {requested}; choose one of "
                       f"{', '.join(OUTPUT_FORMATS)}")
        return requested
    return formats.auto_output(input_format)


def format_for_suffix(suffix: str) -> str | None:
    """Output format named by a file suffix (``.png`` -> ``png``), ``None`` if we cannot write
    that suffix (unknown, or an input-only format such as ``.gif``)."""
    fmt = formats.by_suffix(suffix)
    return fmt.name if fmt is not None and fmt.writable else None


#: DDS block formats Pillow writes (a DDS input in one of these keeps it).
DDS_WRITABLE = ("DXT1", "DXT3", "DXT5", "BC2", "BC3", "BC5")
#: Output formats that keep an alpha channel.
ALPHA_FORMATS = ("png", "webp", "tga", "dds")


def matte_warning(fmt: str, alpha: np.ndarray | None, matte: str = "#ffffff") -> str | None:
    """The warning a job records when ``fmt`` cannot hold the image's transparency."""
    if fmt in ALPHA_FORMATS or is_opaque(alpha):
        return None
    return (f"{fmt.upper()} has no transparency: transparent pixels were composited onto the "
            f"matte {matte}; choose png or webp to keep alpha")


def encode_image(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    fmt: str,
    *,
    quality: int = 95,
    metadata: dict[str, str] | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    matte: tuple[int, int, int] = (255, 255, 255),
    dds_format: str | None = None,
) -> bytes:
    """Encode to ``fmt`` (png/webp/jpeg/tga/dds). DDS is block-compressed by Pillow: in
    ``dds_format`` (a DDS input's own format, kept when Pillow can write it: DXT1/3/5, BC2/3/5),
    else BC1 (DXT1) when opaque, BC3 (DXT5) with alpha. Alpha is kept except for JPEG, which has none:
    there the colour is composited onto ``matte`` through the alpha (see :func:`matte_warning`),
    so transparent areas show the matte instead of whatever colour hid under them.

    ``uint16`` colour is written as 16-bit greyscale PNG (the luma) when ``fmt`` is png and there
    is no alpha; otherwise it is reduced to 8 bits. ``metadata`` lands in the EXIF Software /
    ImageDescription tags (TGA: the image id field). ``compress_level`` (0-9) is PNG's zlib level.
    """
    if fmt not in ALPHA_FORMATS and alpha is not None:
        if not is_opaque(alpha):
            rgb = composite_on_matte(rgb, alpha.astype(rgb.dtype), matte)
        alpha = None
    im = _to_pil(rgb, alpha, fmt)
    buf = io.BytesIO()
    kwargs: dict[str, object] = {}
    text = "; ".join(f"{k}={v}" for k, v in (metadata or {}).items())
    if text and fmt != "tga":
        kwargs["exif"] = exif_bytes(text)
    if fmt == "png":
        kwargs["compress_level"] = compress_level
    elif fmt == "webp":
        kwargs.update(quality=quality, lossless=quality >= 100, exact=True)
    elif fmt == "jpeg":
        kwargs.update(quality=min(quality, 100), subsampling=0)
    elif fmt == "tga":
        kwargs.update(compression="tga_rle", id_section=text.encode()[:255])
    elif fmt == "dds":
        chosen = dds_format if dds_format in DDS_WRITABLE else None
        if chosen == "BC5" and im.mode == "RGBA":  # two channels: alpha cannot ride along
            im = im.convert("RGB")
        kwargs = {"pixel_format": chosen or ("DXT5" if im.mode == "RGBA" else "DXT1")}
    else:
        raise _err("image_unsupported", f"cannot write {fmt}; choose one of "
                   f"{', '.join(OUTPUT_FORMATS)}")
    im.save(buf, format=fmt.upper(), **kwargs)
    return buf.getvalue()


def _to_pil(rgb: np.ndarray, alpha: np.ndarray | None, fmt: str) -> Image.Image:
    if rgb.dtype == np.uint16:
        if fmt == "png" and alpha is None:
            return Image.fromarray(rgb.mean(axis=2).round().astype(np.uint16))
        rgb = (rgb.astype(np.uint32) * 255 // 65535).astype(np.uint8)
        if alpha is not None and alpha.dtype == np.uint16:
            alpha = (alpha.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if alpha is None or fmt == "jpeg":
        return Image.fromarray(rgb)
    return Image.fromarray(np.dstack([rgb, alpha.astype(np.uint8)]))


def exif_bytes(text: str) -> bytes:
    exif = Image.Exif()
    exif[0x0131] = "AI Assets Toolbox"
    exif[0x010E] = text
    return exif.tobytes()
