"""Immutable records: frozen, slotted value classes that are cheap to define.

Why not `dataclasses`: `@dataclass(frozen=True, slots=True)` costs about 0.5 ms per class (it compiles six
methods with `exec` and then rebuilds the class for `__slots__`), and importing `dataclasses` pulls in
`inspect` (~7 ms). The `pybuild check` path defines about forty such types, which made dataclasses a third
of its start-up. `record` compiles only `__init__` (so instances are built as fast as a dataclass's) and
shares generic `__eq__`, `__hash__`, `__repr__` and frozen `__setattr__` between all records.

It is declared with `typing.dataclass_transform`, so mypy checks records exactly like frozen dataclasses:
field order, defaults, `kw_only`, `field(default_factory=...)` and a `_: KW_ONLY` marker (import `KW_ONLY`
from `dataclasses` under `TYPE_CHECKING`; at run time the annotation is only a string).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")
_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Raised on an attempt to change a record."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], T]) -> T:
    """A field whose default is made per instance (`field(default_factory=dict)`)."""
    return _Factory(default_factory)  # type: ignore[return-value]


def _record_eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return all(getattr(self, name) == getattr(other, name) for name in self.__record_fields__)


def _record_hash(self: Any) -> int:
    return hash(tuple(getattr(self, name) for name in self.__record_fields__))


def _record_repr(self: Any) -> str:
    parts = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_fields__)
    return f"{self.__class__.__qualname__}({parts})"


def _record_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _record_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _record_getstate(self: Any) -> tuple[object, ...]:
    return tuple(getattr(self, name) for name in self.__record_fields__)


def _record_setstate(self: Any, state: tuple[object, ...]) -> None:
    for name, value in zip(self.__record_fields__, state):
        object.__setattr__(self, name, value)


_METHODS = {
    "__eq__": _record_eq, "__hash__": _record_hash, "__repr__": _record_repr,
    "__setattr__": _record_setattr, "__delattr__": _record_delattr,
    "__getstate__": _record_getstate, "__setstate__": _record_setstate,
}


def _own_fields(cls: type) -> tuple[list[str], set[str]]:
    """The class's own field names in order, and those after a `KW_ONLY` marker."""
    names: list[str] = []
    kw_only: set[str] = set()
    after_marker = False
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar")):
            continue
        if text in ("KW_ONLY", "dataclasses.KW_ONLY"):
            after_marker = True
            continue
        names.append(name)
        if after_marker:
            kw_only.add(name)
    return names, kw_only


def _make_init(cls: type, fields: tuple[str, ...], defaults: dict[str, object], kw_only: set[str]) -> Any:
    """`__init__` for `fields` (the one method worth generating: it runs per instance).

    The source is checked now, but compiled on the first instance: most records a short command defines
    are never made (or only unpickled), and `exec` is most of what defining a record costs."""
    positional: list[str] = []
    keywords: list[str] = []
    body: list[str] = []
    env: dict[str, object] = {"_set": object.__setattr__, "_MISSING": _MISSING}
    for name in fields:
        param = name
        if name in defaults:
            value = defaults[name]
            if isinstance(value, _Factory):
                env[f"_f_{name}"] = value.make
                param = f"{name}=_MISSING"
                body.append(f"    if {name} is _MISSING: {name} = _f_{name}()")
            else:
                env[f"_d_{name}"] = value
                param = f"{name}=_d_{name}"
        elif name not in kw_only and any(p.count("=") for p in positional):
            raise TypeError(f"{cls.__name__}: non-default field {name!r} follows a default field")
        (keywords if name in kw_only else positional).append(param)
        body.append(f"    _set(self, {name!r}, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    params = ", ".join(["self", *positional, *(["*", *keywords] if keywords else [])])
    source = f"def __init__({params}) -> None:\n" + ("\n".join(body) or "    pass")
    qualname = f"{cls.__qualname__}.__init__"
    owner: list[type] = []  # the built class, filled in by `_build`

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        exec(source, env)  # noqa: S102 - generated from field names only
        init: Any = env["__init__"]
        init.__qualname__ = qualname
        type.__setattr__(owner[0], "__init__", init)
        init(self, *args, **kwargs)

    __init__.__qualname__ = qualname
    __init__.owner = owner  # type: ignore[attr-defined]
    return __init__


def _build(cls: type, kw_only: bool) -> type:
    inherited: tuple[str, ...] = ()
    for base in reversed(cls.__mro__[1:]):
        inherited += tuple(n for n in getattr(base, "__record_fields__", ()) if n not in inherited)
    own, marked = _own_fields(cls)
    fields = inherited + tuple(n for n in own if n not in inherited)
    defaults: dict[str, object] = {}
    for base in reversed(cls.__mro__[1:]):
        defaults.update(getattr(base, "__record_defaults__", {}))
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    for name in own:
        if name in namespace:
            defaults[name] = namespace.pop(name)
    kw_fields = set(fields) if kw_only else marked | {n for b in cls.__mro__[1:]
                                                       for n in getattr(b, "__record_kw_only__", ())}
    namespace.update(_METHODS)
    namespace.update({"__slots__": tuple(n for n in own if n not in inherited), "__record_fields__": fields,
                      "__record_defaults__": defaults, "__record_kw_only__": frozenset(kw_fields),
                      "__match_args__": tuple(n for n in fields if n not in kw_fields)})
    init = _make_init(cls, fields, defaults, kw_fields)
    namespace["__init__"] = init
    built = type(cls)(cls.__name__, cls.__bases__, namespace)
    init.owner.append(built)
    return built


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    """Make `cls` a frozen, slotted record (see the module docstring); use as `@record` or `@record(...)`."""
    if cls is None:
        return lambda inner: _build(inner, kw_only)
    return _build(cls, kw_only)


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of record `obj` with some fields changed (like `dataclasses.replace`)."""
    values = {name: getattr(obj, name) for name in obj.__record_fields__}  # type: ignore[attr-defined]
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {', '.join(sorted(unknown))}")
    values.update(changes)
    return type(obj)(**values)


def fields(obj: object) -> tuple[str, ...]:
    """The field names of a record (class or instance), in order."""
    names: tuple[str, ...] = getattr(obj, "__record_fields__")
    return names
