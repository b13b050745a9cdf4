"""Thumbnails for media messages: a small JPEG of an image, made with Pillow.

Pillow's decompression-bomb guard stays on (``Image.MAX_IMAGE_PIXELS``, 89 478 485
pixels by default): an image with more pixels than that is refused with
``MediaError("image_too_large")`` rather than decoded — Pillow itself only warns up to
twice the limit; here the warning is an error too. A file that is not an image in one
of ``FORMATS`` gets no thumbnail (``None``).

::

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (640, 480), "red").save(buf, "PNG")
    >>> thumb = make_thumbnail(io.BytesIO(buf.getvalue()))
    >>> Image.open(io.BytesIO(thumb.data)).size, thumb.mime, thumb.width, thumb.height
    ((96, 72), 'image/jpeg', 640, 480)
    >>> make_thumbnail(io.BytesIO(b"not an image")) is None
    True
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from chat.media_crypto import MediaError

__all__ = ["FORMATS", "MAX_THUMB_BYTES", "THUMB_SIDE", "Thumbnail", "make_thumbnail"]

#: the image formats given a thumbnail (photos; never e.g. EPS, which Pillow renders
#: through Ghostscript)
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
#: the thumbnail's longer side, in pixels
THUMB_SIDE = 96
#: a thumbnail travels inside the message: at most this many bytes
MAX_THUMB_BYTES = 6 * 1024


@dataclass(frozen=True)
class Thumbnail:
    data: bytes  # a JPEG
    mime: str
    width: int  # of the original image
    height: int


def make_thumbnail(src: str | BinaryIO, *, side: int = THUMB_SIDE,
                   max_bytes: int = MAX_THUMB_BYTES) -> Thumbnail | None:
    """A JPEG thumbnail of the image ``src`` (a path or a binary file), its longer side
    ``side`` pixels, at most ``max_bytes``; ``None`` if ``src`` is not an image Pillow
    reads. Raises ``MediaError("image_too_large")`` for an image beyond
    ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb) and ``MediaError("bad_image")``
    for one that cannot be decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(src, formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MediaError("image_too_large",
                             f"refusing to decode the image: {e} (at most "
                             f"{Image.MAX_IMAGE_PIXELS} pixels are decoded)") from None
        except UnidentifiedImageError:
            return None
        try:
            with im:
                width, height = im.size
                im.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a reduced scale
                small = ImageOps.exif_transpose(im)
                small.thumbnail((side, side))
                rgb = small.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MediaError("image_too_large", f"refusing to decode the image: {e}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise MediaError("bad_image", f"the image cannot be decoded: {e}") from None
    for quality in (75, 60, 45, 30):
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= max_bytes:
            return Thumbnail(out.getvalue(), "image/jpeg", width, height)
    return None  # (a 96-pixel JPEG does not get this large)
