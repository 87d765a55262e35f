"""The machinery shared by every payload: fixed little-endian layouts.

A payload class is a frozen dataclass that states its layout once, in its
class line: ``class DmaMap(Payload, layout="IIQQQ", size="SIZE")``. The
struct (little-endian), the names of the fields it packs (the leading
annotations, one per item of the layout) and the size constant (``SIZE``,
``FIXED_SIZE``...: the layout's size) derive from it. Classes with a variable
part override ``pack`` and ``unpack`` and use ``_split`` to take the fixed
part off the front.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from ._errors import CodecError


class Payload:
    """Base of every message payload: ``pack() -> bytes``, ``unpack(bytes) -> Payload``."""

    __slots__ = ()
    NAME: ClassVar[str] = "payload"
    _layout: ClassVar[struct.Struct] = struct.Struct("<")
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, layout: str | None = None, size: str | None = None, **kw):
        super().__init_subclass__(**kw)
        if layout is None:  # inherited, or dataclass(slots=True) re-creating the class
            return
        cls._layout = struct.Struct("<" + layout)
        count = len(cls._layout.unpack(bytes(cls._layout.size)))
        names = [
            name
            for name, kind in cls.__dict__.get("__annotations__", {}).items()
            if not str(kind).startswith("ClassVar")
        ]
        if len(names) < count:
            raise TypeError(f"{cls.__name__}: layout {layout!r} has {count} items, {names}")
        cls._fields = tuple(names[:count])
        if size is not None:
            setattr(cls, size, cls._layout.size)

    def _pack_fixed(self) -> bytes:
        try:
            return self._layout.pack(*[getattr(self, f) for f in self._fields])
        except struct.error as e:
            raise CodecError(self.NAME, _struct_field(self), str(e)) from None

    def pack(self) -> bytes:
        return self._pack_fixed()

    @classmethod
    def _split(cls, data: bytes, minimum_only: bool = True) -> tuple[tuple, bytes]:
        """The fixed fields at the front of ``data`` and the rest."""
        data = bytes(data)
        size = cls._layout.size
        if len(data) < size or (not minimum_only and len(data) != size):
            raise CodecError(
                cls.NAME,
                "size",
                f"payload is {len(data)} bytes, expected "
                f"{'at least ' if minimum_only else ''}{size}",
            )
        return cls._layout.unpack_from(data), data[size:]

    @classmethod
    def unpack(cls, data: bytes):
        layout = cls._layout
        if len(data) != layout.size:  # _split words the error
            cls._split(data, minimum_only=False)
        return cls(*layout.unpack(data))


def _struct_field(obj: Payload) -> str:
    """Name the first field whose value does not fit its layout slot."""
    codes = [c for c in obj._layout.format.lstrip("<") if not c.isdigit()]
    for name, code in zip(obj._fields, codes, strict=False):
        try:
            struct.pack("<" + code, getattr(obj, name))
        except struct.error:
            return name
    return "fields"


def check_exact(name: str, field: str, got: int, want: int) -> None:
    if got != want:
        raise CodecError(name, field, f"is {got}, but {want} bytes follow")


def u64(value: int) -> bool:
    return 0 <= value < 1 << 64


class TrailingData(Payload):
    """Fixed fields, then ``data``: every byte after them."""

    __slots__ = ()

    def pack(self) -> bytes:
        return self._pack_fixed() + self.data

    @classmethod
    def unpack(cls, data: bytes):
        values, rest = cls._split(data)
        return cls(*values, rest)


class CountedData(TrailingData):
    """Fixed fields, then exactly as many bytes of ``data`` as the field ``_count`` says."""

    __slots__ = ()
    _count: ClassVar[str] = "count"

    @classmethod
    def unpack(cls, data: bytes):
        values, rest = cls._split(data)
        check_exact(cls.NAME, cls._count, values[cls._fields.index(cls._count)], len(rest))
        return cls(*values, rest)
