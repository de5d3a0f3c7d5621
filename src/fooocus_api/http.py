"""Small HTTP helpers: msgspec JSON responses, error bodies, Accept parsing, multipart."""

from __future__ import annotations

import email.parser
import email.policy
import re
from typing import Any

import msgspec
from starlette.responses import Response

from fooocus_api.schemas import ErrorDetail, ErrorResponse

_PATH_RE = re.compile(r"at `\$(.*)`$")
_PATH_PART_RE = re.compile(r"\.([A-Za-z_][\w]*)|\[(\d+)\]")

#: Accepted image subtypes → (PIL format, media type, file extension).
IMAGE_TYPES: dict[str, tuple[str, str, str]] = {
    "png": ("PNG", "image/png", "png"),
    "jpeg": ("JPEG", "image/jpeg", "jpeg"),
    "jpg": ("JPEG", "image/jpeg", "jpg"),
    "webp": ("WEBP", "image/webp", "webp"),
}


class JSON(Response):
    """A response whose body is ``msgspec.json.encode(content)``."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class RequestError(Exception):
    """Ends a request with ``status`` and an error body naming ``field``."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        kind: str = "value_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind
        self.headers = headers

    def response(self) -> JSON:
        if self.field is None:
            body = ErrorResponse(detail=self.message)
        else:
            loc: list[str | int] = ["body", *split_field(self.field)]
            body = ErrorResponse(
                detail=[ErrorDetail(loc=loc, msg=self.message, type=self.kind)],
                field=self.field,
            )
        return JSON(body, status_code=self.status, headers=self.headers)


def split_field(field: str) -> list[str | int]:
    """``"loras[0].weight"`` → ``["loras", 0, "weight"]``."""
    parts: list[str | int] = []
    for match in _PATH_PART_RE.finditer("." + field if not field.startswith(".") else field):
        parts.append(match.group(1) if match.group(1) else int(match.group(2)))
    return parts or [field]


def validation_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> RequestError:
    """A msgspec error → 422 naming the field (``$.loras[0].weight`` → ``loras[0].weight``)."""
    text = str(exc)
    match = _PATH_RE.search(text)
    field = match.group(1).lstrip(".") if match else None
    message = _PATH_RE.sub("", text).rstrip(" -") if match else text
    if not isinstance(exc, msgspec.ValidationError):  # ValidationError is a DecodeError
        return RequestError(422, f"invalid JSON body: {text}", "body", "json_invalid")
    return RequestError(422, message, field or "body", "type_error")


def accept_image(header: str | None) -> str | None:
    """The image subtype a client asks for with ``Accept`` (``png``, ``jpeg``, ``jpg``,
    ``webp``), or None for JSON. The first media range decides; ``image/*`` or another image
    type means PNG; a missing header means JSON.
    """
    if not header:
        return None
    first = header.split(",", 1)[0].split(";", 1)[0].strip().lower()
    if not first.startswith("image/"):
        return None
    subtype = first[len("image/") :]
    return subtype if subtype in IMAGE_TYPES else "png"


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[bytes, str | None]]:
    """Multipart form data → ``{name: (payload, filename)}`` (stdlib ``email`` parser)."""
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        raise RequestError(400, "malformed multipart body", "body")
    fields: dict[str, tuple[bytes, str | None]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = (payload, part.get_filename())
    return fields
