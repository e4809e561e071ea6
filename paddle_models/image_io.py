"""Reading image and label files completely or not at all.

OpenCV decodes a truncated JPEG into a partly grey image and only prints a libjpeg warning, and on a truncated PNG,
BMP or TIFF it prints a diagnostic of its own before failing.  So before a file is decoded its structure is checked
here, from the bytes already read:

* JPEG: the markers are followed (segment lengths, entropy-coded data up to the next marker) to the end-of-image
  marker; a file that ends before it is truncated.
* PNG: the chunks are followed to ``IEND``; a file that ends before it is truncated, and a critical chunk (IHDR,
  PLTE, IDAT, IEND) whose CRC does not match is corrupt (libpng refuses it).
* BMP (uncompressed): the file must hold the pixel rows its header announces.

The same walk yields the image size, which is checked against a pixel limit before anything is decoded.  Other
formats (TIFF, WebP, ...) are left to the decoder, whose failure is reported as ``cannot read image: PATH``; their
size comes from PIL's header-only open.

The pixels are OpenCV's, decoded from the same bytes with ``cv2.imdecode`` (which, like ``cv2.imread``, applies the
EXIF orientation), so they are those of ``cv2.imread``, as PaddleSeg's ``Compose`` reads images.
"""
import os
import struct
import warnings
import zlib

import cv2
import numpy as np

from paddle_models.errors import UserError

# OpenCV's default CV_IO_MAX_IMAGE_PIXELS: it refuses to decode larger images.
DECODER_MAX_PIXELS = 1 << 30

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG markers that stand alone (no length field): TEM, RST0-7, SOI.
_JPEG_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}
# Start-of-frame markers (they carry the image size); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class _Broken(Exception):
    """The file's structure shows it truncated or corrupt; ``str()`` says how (e.g. "truncated JPEG file (...)")."""


def _jpeg_size(data):
    """(width, height) of a JPEG after following its markers to the end-of-image marker, as libjpeg reads them.

    Between markers, stray bytes are skipped up to the next 0xFF (libjpeg does the same, with a warning).  After a
    start-of-scan segment the entropy-coded data runs to the next 0xFF that is followed by neither 0x00 (a stuffed
    byte), 0xFF (fill) nor a restart marker.

    Raises:
        _Broken: the file ends before its end-of-image marker, or a segment length is impossible.
    """
    n = len(data)
    size = (None, None)
    scan_markers = None  # positions of markers that can end entropy-coded data; found when first needed
    pos = 2
    while True:
        pos = data.find(b'\xff', pos)
        if pos < 0:
            raise _Broken("truncated JPEG file (it ends before its end-of-image marker)")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise _Broken("truncated JPEG file (it ends before its end-of-image marker)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return size
        if marker == 0x00 or marker in _JPEG_STANDALONE:  # 0xFF00 outside a scan: a stray byte, skipped
            continue
        if pos + 2 > n:
            raise _Broken("truncated JPEG file (it ends inside a marker segment)")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            raise _Broken(f"corrupt JPEG file (marker 0x{marker:02X} at byte {pos - 2} has length {length})")
        if pos + length > n:
            raise _Broken("truncated JPEG file (it ends inside a marker segment)")
        if marker in _JPEG_SOF and length >= 7:
            size = ((data[pos + 5] << 8) | data[pos + 6], (data[pos + 3] << 8) | data[pos + 4])
        pos += length
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            if scan_markers is None:
                array = np.frombuffer(data, np.uint8)
                ff = np.flatnonzero(array[:-1] == 0xFF)
                following = array[ff + 1]
                scan_markers = ff[(following != 0x00) & (following != 0xFF) &
                                  ((following < 0xD0) | (following > 0xD7))]
            index = int(np.searchsorted(scan_markers, pos))
            if index == len(scan_markers):
                raise _Broken("truncated JPEG file (it ends inside the image data, before its end-of-image "
                              "marker)")
            pos = int(scan_markers[index])


def _png_size(data):
    """(width, height) of a PNG after following its chunks to ``IEND`` and checking the critical chunks' CRCs.

    Raises:
        _Broken: the file ends before ``IEND`` completes, or a critical chunk's CRC does not match.
    """
    n = len(data)
    view = memoryview(data)
    size = (None, None)
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > n:
            raise _Broken("truncated PNG file (it ends before its IEND chunk)")
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        end = pos + 12 + length
        name = kind.decode('latin-1')
        if end > n:
            raise _Broken(f"truncated PNG file (it ends inside chunk {name})")
        if kind[:1].isupper():  # a critical chunk: libpng refuses a CRC mismatch
            stored = struct.unpack('>I', data[end - 4:end])[0]
            if zlib.crc32(view[pos + 4:end - 4]) != stored:
                raise _Broken(f"corrupt PNG file (chunk {name} at byte {pos} fails its CRC check)")
        if kind == b'IHDR' and length >= 8:
            size = struct.unpack('>II', data[pos + 8:pos + 16])
        if kind == b'IEND':
            return size
        pos = end


def _bmp_size(data):
    """(width, height) of a BMP; an uncompressed one must hold the rows its header announces.

    Raises:
        _Broken: the header or the pixel rows are cut short.
    """
    n = len(data)
    if n < 26:
        raise _Broken("truncated BMP file (it ends inside its header)")
    offset, header_size = struct.unpack('<II', data[10:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bits = struct.unpack('<HHHH', data[18:26])
        compression = 0
    elif header_size >= 40:
        if n < 34:
            raise _Broken("truncated BMP file (it ends inside its header)")
        width, height, _, bits, compression = struct.unpack('<iiHHI', data[18:34])
    else:
        return None, None
    height = abs(height)
    if compression in (0, 3, 6) and width > 0 and bits in (1, 2, 4, 8, 16, 24, 32):
        needed = offset + (width * bits + 31) // 32 * 4 * height
        if n < needed:
            raise _Broken(f"truncated BMP file (it holds {n} of the {needed} bytes its header announces)")
    return width, height


def _tiff_size(data):
    """(width, height) from the first image directory of a classic TIFF, or (None, None) where it is not found."""
    order = '<' if data[:2] == b'II' else '>'
    try:
        (offset,) = struct.unpack(order + 'I', data[4:8])
        (count,) = struct.unpack(order + 'H', data[offset:offset + 2])
        found = {}
        for i in range(count):
            entry = offset + 2 + 12 * i
            tag, kind = struct.unpack(order + 'HH', data[entry:entry + 4])
            if tag in (256, 257):
                fmt = 'H' if kind == 3 else 'I'
                found[tag] = struct.unpack(order + fmt, data[entry + 8:entry + 8 + struct.calcsize(fmt)])[0]
    except struct.error:
        return None, None
    return found.get(256), found.get(257)


def _pil_size(path):
    """(width, height) from PIL's header-only open (any format it knows), or (None, None); a file PIL would call a
    decompression bomb is refused there before its size is known, so it counts as unknown too."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with Image.open(path) as image:
                return image.size
    except Exception:  # noqa: BLE001  (any failure: the decoder then has its say)
        return None, None


def image_size(data, path=None):
    """The (width, height) an image file's header gives, after checking its structure (see the module docstring).

    Args:
        data (bytes): The whole file.
        path (str, optional): The file, for PIL's header-only open of formats not parsed here.

    Returns:
        tuple: (width, height), either None where unknown.

    Raises:
        _Broken: the file is truncated or corrupt.
    """
    if data[:3] == b'\xff\xd8\xff':
        return _jpeg_size(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png_size(data)
    if data[:2] == b'BM':
        return _bmp_size(data)
    if data[:4] in (b'II*\x00', b'MM\x00*'):
        return _tiff_size(data)
    return _pil_size(path) if path else (None, None)


def read_bytes(path, what='image'):
    """The content of ``path``; a UserError ``cannot read image: PATH (reason)`` where it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as err:
        raise UserError(f"cannot read {what}: {path} ({err.strerror or err})") from None


def check_image(path, what='image', max_pixels=None, data=None):
    """Check that an image file is complete and not too large, without decoding it.

    Args:
        path (str): The file.
        what (str): 'image' or 'label', for the message.
        max_pixels (int, optional): Refuse a larger image; OpenCV's own limit (``DECODER_MAX_PIXELS``) applies
            always.
        data (bytes, optional): The file's content where already read.

    Returns:
        tuple: (width, height) from the header, either None where unknown.

    Raises:
        UserError: ``cannot read image: PATH: truncated JPEG file (...)`` for a truncated or corrupt file;
            ``image too large for memory: PATH is WxH pixels`` above the limit.
    """
    data = read_bytes(path, what) if data is None else data
    try:
        width, height = image_size(data, path)
    except _Broken as err:
        raise UserError(f"cannot read {what}: {path}: {err}") from None
    limit = DECODER_MAX_PIXELS if max_pixels is None else min(max_pixels, DECODER_MAX_PIXELS)
    if width is not None and height is not None and width * height > limit:
        raise UserError(f"{what} too large for memory: {path} is {width}x{height} pixels")
    return width, height


def read_image(path, flag=cv2.IMREAD_COLOR, what='image', max_pixels=None):
    """Read an image as ``cv2.imread(path, flag)`` does (BGR uint8 for IMREAD_COLOR), checked first.

    Args:
        path (str): The file.
        flag (int): OpenCV's read flag (``cv2.IMREAD_COLOR``, ``cv2.IMREAD_GRAYSCALE``, ...).
        what (str): 'image' or 'label', for messages.
        max_pixels (int, optional): Refuse a larger image before decoding it (see ``check_image``).

    Raises:
        UserError: as ``check_image``; ``cannot read image: PATH`` where OpenCV cannot decode the file.
    """
    data = read_bytes(path, what)
    check_image(path, what, max_pixels, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if image is None:
        raise UserError(f"cannot read {what}: {path}")
    return image


def available_memory():
    """Bytes of memory this process can still take: Linux's MemAvailable, lowered to what is left of a cgroup
    (v2 or v1) memory limit; None where neither is known."""
    values = []
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    values.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                                   ('/sys/fs/cgroup/memory/memory.limit_in_bytes',
                                    '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
            if limit.isdigit() and int(limit) < 1 << 60:
                values.append(max(int(limit) - usage, 0))
                break
        except (OSError, ValueError):
            continue
    if not values and hasattr(os, 'sysconf'):
        try:
            values.append(os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))
        except (ValueError, OSError):
            pass
    return min(values) if values else None


def memory_pixel_limit(bytes_per_pixel):
    """The most pixels that fit in the available memory at ``bytes_per_pixel`` (None where memory is unknown)."""
    available = available_memory()
    return None if available is None else available // max(int(bytes_per_pixel), 1)
