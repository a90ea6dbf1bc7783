"""@record: classes of named fields, for Python 3.6 (dom0) which has no dataclasses.

The fields are the class's annotated attributes, in order; a class attribute
is the field's default, ``field(default_factory=list)`` a fresh default per
instance. The class gets ``__init__`` (positional or keyword), ``__repr__``
and ``__eq__``; ``fields()`` and ``replace()`` work as dataclasses' do. Only
what the toolstack uses: no ordering, freezing, ``__post_init__`` or slots.
"""

from typing import Any, Callable, List, Optional

_MISSING = object()


class Field:
    __slots__ = ("name", "type", "default", "default_factory")

    def __init__(self, name: str, type_: Any, default: Any = _MISSING,
                 default_factory: Optional[Callable[[], Any]] = None) -> None:
        self.name = name
        self.type = type_  # as annotated: a type, or the string of a quoted one
        self.default = default
        self.default_factory = default_factory

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A default made fresh for each instance (a list, a dict)."""
    return _Factory(default_factory)


def fields(cls_or_record: Any) -> "List[Field]":
    """The fields of a record class or instance, in declaration order."""
    return list(cls_or_record.__record_fields__)


def replace(obj: Any, **changes: Any) -> Any:
    """A copy of `obj` with `changes` applied (dataclasses.replace)."""
    values = {f.name: getattr(obj, f.name) for f in obj.__record_fields__}
    values.update(changes)
    return type(obj)(**values)


def record(cls: type) -> type:
    """Give `cls` its fields, __init__, __repr__ and __eq__."""
    # A subclass of a record extends its base's fields.
    base = next((k for k in cls.__mro__[1:] if "__record_fields__" in k.__dict__), None)
    declared = list(base.__record_fields__) if base is not None else []
    for name, type_ in cls.__dict__.get("__annotations__", {}).items():
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Factory):
            item = Field(name, type_, default_factory=value.make)
            delattr(cls, name)  # never a shared instance default
        else:
            item = Field(name, type_, default=value)
        at = next((i for i, f in enumerate(declared) if f.name == name), len(declared))
        declared[at:at + 1] = [item]  # an override keeps the base's position
    names = [f.name for f in declared]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(declared):
            raise TypeError(f"{cls.__name__}() takes {len(declared)} arguments, got {len(args)}")
        for f, value in zip(declared, args):
            if f.name in kwargs:
                raise TypeError(f"{cls.__name__}() got {f.name!r} twice")
            kwargs[f.name] = value
        unknown = set(kwargs) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__}() has no field {sorted(unknown)[0]!r}")
        for f in declared:
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default_factory is not None:
                value = f.default_factory()
            elif f.default is not _MISSING:
                value = f.default
            else:
                raise TypeError(f"{cls.__name__}() missing argument {f.name!r}")
            setattr(self, f.name, value)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{cls.__name__}({inner})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    cls.__record_fields__ = tuple(declared)
    cls.__init__ = __init__
    cls.__repr__ = __repr__
    cls.__eq__ = __eq__
    cls.__hash__ = None  # mutable and compared by value, as a dataclass
    return cls
