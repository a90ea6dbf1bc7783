"""@record (smlib/toolstack/record.py): the dataclass subset the toolstack uses, on 3.6."""

from typing import Optional

import pytest

from smlib.toolstack.record import field, fields, record, replace


@record
class Disk:
    uuid: str
    size: int = 0
    parent: Optional[str] = None
    tags: list = field(default_factory=list)
    LIMIT = 7  # not annotated: a class constant, no field


def test_fields_in_order_with_defaults():
    assert [f.name for f in fields(Disk)] == ["uuid", "size", "parent", "tags"]
    assert [f.type for f in fields(Disk(uuid="u"))][:2] == [str, int]
    d = Disk("u", 5)
    assert (d.uuid, d.size, d.parent, d.tags, d.LIMIT) == ("u", 5, None, [], 7)


def test_factory_defaults_are_fresh_per_instance():
    a, b = Disk("a"), Disk("b")
    a.tags.append("x")
    assert b.tags == [] and "tags" not in vars(Disk)


def test_eq_repr_replace():
    a = Disk("u", 1, tags=["t"])
    assert a == Disk(uuid="u", size=1, tags=["t"]) and a != Disk("u", 2)
    assert repr(a) == "Disk(uuid='u', size=1, parent=None, tags=['t'])"
    b = replace(a, size=9)
    assert (b.size, a.size, b.uuid) == (9, 1, "u") and isinstance(b, Disk)
    with pytest.raises(TypeError):
        hash(a)


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {}, "missing argument 'uuid'"),
    (("u",), {"uuid": "v"}, "'uuid' twice"),
    (("u",), {"colour": 1}, "no field 'colour'"),
    (("u", 1, None, [], 5), {}, "takes 4 arguments"),
])
def test_bad_arguments(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Disk(*args, **kwargs)


def test_subclass_extends_fields():
    @record
    class Big(Disk):
        extra: int = 1
        size: int = 10  # overrides the default, keeps the position

    assert [f.name for f in fields(Big)] == ["uuid", "size", "parent", "tags", "extra"]
    assert Big("u").size == 10
