"""Input images: base64, data URLs and http(s) URLs → normalised PIL images.

URLs are fetched with aiohttp: a total timeout, a size cap, image content types only, and
redirects followed by hand so every hop is checked again; hosts that resolve to private,
loopback, link-local or otherwise non-public addresses are refused unless allowed (and the
connection itself only goes to addresses that passed the check). Decoding runs in a worker
thread: EXIF orientation applied, converted to RGB (masks to L).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from PIL import Image, ImageOps, UnidentifiedImageError

#: Values that mean "no image" (FooocusAPI's list, incl. the Swagger placeholder).
NO_IMAGE = frozenset({"", "none", "null", "string"})
MAX_REDIRECTS = 5
MAX_PIXELS = 64 * 1024 * 1024
_DATA_URL = re.compile(r"^data:([\w/+.-]*)(;[\w=.-]+)*;base64,", re.IGNORECASE)
USER_AGENT = "fooocus-api/0.1 (input image fetch)"


class BadImage(ValueError):
    """An input image could not be used; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def is_empty(value: str | None) -> bool:
    """True for the values that mean "no image"."""
    return value is None or value.strip().lower() in NO_IMAGE


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver but drops non-public addresses."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if is_public_address(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to private or local addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


async def check_url_host(url: str, allow_private: bool) -> None:
    """Raise ValueError unless ``url`` is http(s) and (unless allowed) its host is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("only http and https URLs are allowed")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or 0, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from None
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise ValueError(f"host {host!r} is a private, loopback or local address; refused")


class ImageFetcher:
    """Fetches and decodes input images; one aiohttp session per service."""

    def __init__(self, allow_private: bool, max_bytes: int, timeout_s: float) -> None:
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=None if self.allow_private else PublicOnlyResolver()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, field: str, url: str) -> bytes:
        """Download ``url`` (redirects re-checked), enforcing type, size and time limits."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(field, url)
        except TimeoutError:
            raise BadImage(field, f"fetching {url} took longer than {self.timeout_s:g} s") from None

    async def _fetch(self, field: str, url: str) -> bytes:
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                await check_url_host(current, self.allow_private)
            except ValueError as exc:
                raise BadImage(field, f"{current}: {exc}") from None
            try:
                async with self._client().get(current, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise BadImage(field, f"{current}: redirect without a Location")
                        current = urljoin(current, location)
                        continue
                    if response.status != 200:
                        raise BadImage(field, f"{current}: HTTP {response.status}")
                    ctype = response.headers.get("Content-Type", "").split(";")[0].strip()
                    if not ctype.lower().startswith("image/"):
                        raise BadImage(
                            field, f"{current} is not an image (Content-Type {ctype or 'none'})"
                        )
                    declared = response.content_length
                    if declared is not None and declared > self.max_bytes:
                        raise BadImage(field, f"{current}: larger than {self.max_bytes} bytes")
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(1 << 16):
                        data += chunk
                        if len(data) > self.max_bytes:
                            raise BadImage(field, f"{current}: larger than {self.max_bytes} bytes")
                    return bytes(data)
            except aiohttp.ClientError as exc:
                raise BadImage(field, f"cannot fetch {current}: {exc}") from None
            except OSError as exc:
                raise BadImage(field, f"cannot fetch {current}: {exc}") from None
        raise BadImage(field, f"{url}: more than {MAX_REDIRECTS} redirects")

    async def load(
        self, field: str, value: str | None, *, mask: bool = False
    ) -> Image.Image | None:
        """The image a request field holds (None for "no image"); :class:`BadImage` if bad."""
        if is_empty(value):
            return None
        assert value is not None
        text = value.strip()
        if text.lower().startswith(("http://", "https://")):
            data = await self.fetch(field, text)
        else:
            data = decode_base64(field, text, self.max_bytes)
        return await asyncio.to_thread(decode_image, field, data, mask)


def decode_base64(field: str, text: str, max_bytes: int) -> bytes:
    """Base64 or data-URL text → bytes (whitespace allowed, nothing else)."""
    match = _DATA_URL.match(text)
    if match:
        if match.group(1) and not match.group(1).lower().startswith("image/"):
            raise BadImage(field, f"data URL of type {match.group(1)!r} is not an image")
        text = text[match.end() :]
    elif text.startswith("data:"):
        raise BadImage(field, "data URLs must be base64-encoded images")
    if len(text) > max_bytes * 4 // 3 + 1024:
        raise BadImage(field, f"image larger than {max_bytes} bytes")
    compact = re.sub(r"\s+", "", text)
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(field, "not a URL and not valid base64") from None


def decode_image(field: str, data: bytes, mask: bool = False) -> Image.Image:
    """Bytes → image with EXIF orientation applied, RGB (or L for masks)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise BadImage(field, f"image of {width}x{height} pixels is too large")
            probe.load()
            image = ImageOps.exif_transpose(probe)
            if image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            ):
                if mask:
                    return image.convert("L")
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return image.convert("L" if mask else "RGB")
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(field, f"not a readable image ({exc})") from None


def image_fields(request: Any) -> list[tuple[str, str | None, bool]]:
    """``(field, value, is_mask)`` of every image a CommonRequest carries."""
    fields: list[tuple[str, str | None, bool]] = [
        ("uov_input_image", request.uov_input_image, False),
        ("inpaint_input_image", request.inpaint_input_image, False),
        ("inpaint_mask_image_upload", request.inpaint_mask_image_upload, True),
        ("enhance_input_image", request.enhance_input_image, False),
    ]
    for index, slot in enumerate(request.controlnet_image):
        fields.append((f"controlnet_image[{index}].cn_img", slot.cn_img, False))
    return fields
