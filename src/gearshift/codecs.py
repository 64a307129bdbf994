"""Payload codecs: how job data and results become bytes on the wire and back.

Bytes go through unchanged by default.  ``codec="json"`` (or ``JsonCodec()``) encodes
with JSON on the way out and decodes on the way in; ``"text"`` uses UTF-8 strings;
``"pickle"`` is available but must be asked for by name, because unpickling data from
the network runs arbitrary code.  Any object with ``encode(value) -> bytes`` and
``decode(bytes) -> value`` methods works as a codec.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, TypeVar, runtime_checkable

T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class Codec(Protocol[T_co]):
    """Turns payloads into bytes and back."""

    def encode(self, value: Any) -> bytes:
        """Encode a payload for the wire."""
        ...

    def decode(self, data: bytes) -> T_co:
        """Decode a payload from the wire."""
        ...


class BytesCodec:
    """The default: bytes as they are; ``str`` is encoded as UTF-8 and None as empty."""

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as bytes.

        Raises:
            TypeError: for anything but bytes-like, str or None.
        """
        if isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            return value.encode()
        if value is None:
            return b""
        raise TypeError(
            f"payload must be bytes or str, not {type(value).__name__} (use codec='json')"
        )

    def decode(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data


class TextCodec(BytesCodec):
    """UTF-8 text: results are ``str``."""

    def decode(self, data: bytes) -> str:  # type: ignore[override]
        """Decode UTF-8 (undecodable bytes become U+FFFD)."""
        return data.decode("utf-8", "replace")


class JsonCodec:
    """JSON in UTF-8, compact separators."""

    def encode(self, value: Any) -> bytes:
        """Serialise ``value`` as JSON."""
        return json.dumps(value, separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any:
        """Parse JSON; an empty payload decodes as None."""
        return json.loads(data) if data else None


class PickleCodec:
    """pickle, for trusted peers only: decoding runs code chosen by the sender."""

    def encode(self, value: Any) -> bytes:
        """Pickle ``value``."""
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        """Unpickle; an empty payload decodes as None."""
        return pickle.loads(data) if data else None  # noqa: S301 - opt-in by name only


_NAMED: dict[str, type[Any]] = {
    "bytes": BytesCodec,
    "text": TextCodec,
    "json": JsonCodec,
    "pickle": PickleCodec,
}


def get_codec(codec: Codec[Any] | str | None) -> Codec[Any]:
    """Resolve ``None`` (bytes), a name (``bytes``, ``text``, ``json``, ``pickle``) or a codec.

    Raises:
        ValueError: an unknown name.
        TypeError: an object without encode/decode.
    """
    if codec is None:
        return BytesCodec()
    if isinstance(codec, str):
        try:
            return _NAMED[codec]()  # type: ignore[no-any-return]
        except KeyError:
            raise ValueError(f"unknown codec {codec!r}; use one of {sorted(_NAMED)}") from None
    if not isinstance(codec, Codec):
        raise TypeError(f"{codec!r} has no encode/decode methods")
    return codec


def describe_exception(exc: BaseException, codec: Codec[Any]) -> bytes:
    """The WORK_EXCEPTION payload for ``exc``: readable text for byte/text codecs,
    ``{"type": ..., "message": ...}`` through any other codec."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if isinstance(codec, BytesCodec):
        return f"{name}: {exc}".encode("utf-8", "replace")
    try:
        return codec.encode({"type": name, "message": str(exc)})
    except Exception:  # a codec that cannot encode dicts: fall back to text
        return f"{name}: {exc}".encode("utf-8", "replace")
