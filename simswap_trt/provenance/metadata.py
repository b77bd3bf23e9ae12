"""Always-on labels in standard metadata fields: outputs say they are synthetic without any key.

Images carry an XMP packet with the IPTC digital source type ``compositeWithTrainedAlgorithmicMedia``
(``Iptc4xmpExt:DigitalSourceType``), a human-readable ``dc:description`` and ``xmp:CreatorTool``: in JPEG
as an APP1 segment, in PNG as an ``iTXt`` chunk with the keyword ``XML:com.adobe.xmp``, in WebP as an
``XMP `` chunk (the file becomes the extended format), in TIFF as the ``XMLPacket`` tag (700) of the first
image. Exiftool, Pillow and photo software read these
fields. Video containers (MP4, MOV, MKV) carry the same facts as container tags (``video_metadata``).
"""

from __future__ import annotations

import struct
import zlib
from xml.sax.saxutils import escape

from simswap_trt.constants import VERSION

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
SYNTHETIC_TEXT = "Synthetic media: faces were swapped by simswap-trt (AI-generated content)"
TAGGED_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
_TIFF_XMP_TAG, _TIFF_BYTE = 700, 1
_JPEG_XMP_ID = b"http://ns.adobe.com/xap/1.0/\0"


def creator_tool() -> str:
    return f"simswap-trt {VERSION}"


def video_metadata() -> dict[str, str]:
    """Container tags (FFmpeg metadata keys) of a synthetic video: 'comment', which most players show, and
    'DigitalSourceType', the machine-readable IPTC value. MP4/MOV keep custom keys only with FFmpeg's
    ``movflags=use_metadata_tags``."""
    return {
        "comment": f"{SYNTHETIC_TEXT}. IPTC digital source type: {DIGITAL_SOURCE_TYPE}",
        "DigitalSourceType": DIGITAL_SOURCE_TYPE,
        "encoding_tool": creator_tool(),
    }


def xmp_packet() -> bytes:
    """The XMP packet every tagged image carries (UTF-8)."""
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"
    xmp:CreatorTool="{escape(creator_tool())}">
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(SYNTHETIC_TEXT)}</rdf:li></rdf:Alt></dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="r"?>""".encode()


def tag_image(encoded: bytes, suffix: str, width: int, height: int) -> bytes | None:
    """``encoded`` (as OpenCV writes ``suffix``) with the XMP packet added; None for formats without a
    standard XMP place (BMP) or a layout this does not edit (BigTIFF). ``width`` and ``height`` are the
    image's (WebP needs them)."""
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return _tag_jpeg(encoded)
    if suffix == ".png":
        return _tag_png(encoded)
    if suffix == ".webp":
        return _tag_webp(encoded, width, height)
    if suffix in (".tif", ".tiff"):
        return _tag_tiff(encoded)
    return None


def _tag_jpeg(encoded: bytes) -> bytes:
    at = 2  # after SOI; after the JFIF APP0 segment where there is one (it must come first)
    if encoded[2:4] == b"\xff\xe0":
        at += 2 + struct.unpack(">H", encoded[4:6])[0]
    payload = _JPEG_XMP_ID + xmp_packet()
    return encoded[:at] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + encoded[at:]


def _tag_png(encoded: bytes) -> bytes:
    data = b"XML:com.adobe.xmp\0" + b"\0\0" + b"\0" + b"\0" + xmp_packet()  # uncompressed, no language
    chunk = struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
    end_of_header = 8 + 25  # signature, then the IHDR chunk (length, type, 13 bytes, CRC)
    return encoded[:end_of_header] + chunk + encoded[end_of_header:]


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)


def _tag_webp(encoded: bytes, width: int, height: int) -> bytes:
    body = encoded[12:]  # after 'RIFF', size, 'WEBP'
    if body[:4] == b"VP8X":
        flags = body[8] | 0x04
        body = body[:8] + bytes([flags]) + body[9:]
    else:  # simple format: one VP8/VP8L chunk; the extended format declares the canvas first
        vp8x = bytes([0x04, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        body = _riff_chunk(b"VP8X", vp8x) + body
    body += _riff_chunk(b"XMP ", xmp_packet())
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def _tag_tiff(encoded: bytes) -> bytes | None:
    """Classic TIFF: the XMP packet and a copy of the first IFD with an ``XMLPacket`` entry are appended, and
    the header points at the copy; the image data and every other offset stay as they were."""
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(encoded[:4])
    if order is None:
        return None
    (ifd,) = struct.unpack(order + "I", encoded[4:8])
    (count,) = struct.unpack(order + "H", encoded[ifd : ifd + 2])
    entries = [encoded[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count)]
    (next_ifd,) = struct.unpack(order + "I", encoded[ifd + 2 + 12 * count : ifd + 6 + 12 * count])
    entries = [e for e in entries if struct.unpack(order + "H", e[:2])[0] != _TIFF_XMP_TAG]
    packet = xmp_packet()
    packet_at = len(encoded) + len(encoded) % 2  # TIFF offsets are word-aligned
    entries.append(struct.pack(order + "HHII", _TIFF_XMP_TAG, _TIFF_BYTE, len(packet), packet_at))
    entries.sort(key=lambda e: struct.unpack(order + "H", e[:2])[0])
    new_ifd = packet_at + len(packet) + len(packet) % 2
    table = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", next_ifd)
    body = encoded[:4] + struct.pack(order + "I", new_ifd) + encoded[8:] + b"\0" * (len(encoded) % 2)
    return body + packet + b"\0" * (len(packet) % 2) + table
