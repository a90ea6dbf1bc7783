"""A small XML-RPC codec on expat, equivalent to xmlrpc.client for what SMAPIv1 uses.

Why not xmlrpc.client: importing it pulls in http.client, ssl and email
(~30 ms), and a driver runs once per storage operation. pyexpat is a C
module that costs nothing to import. tests/framework/test_xmlrpc_equiv.py
proves with hypothesis that both decode the same documents to the same values
and that xmlrpc.client reads back what this module writes.

Values: None <-> nil, bool <-> boolean, int <-> int/i4/i8 (only 32-bit ints
are written, as xmlrpc.client enforces), float <-> double, str <-> string,
bytes <-> base64, dict <-> struct, list/tuple -> array (read as list).
dateTime.iso8601 is read as its text. A document type declaration is
refused outright, so no entity can ever be expanded (billion laughs).
"""

import binascii
from xml.parsers import expat

MAXINT = 2**31 - 1
MININT = -(2**31)


class XMLRPCError(ValueError):
    """The text is not a well-formed XML-RPC document of the expected kind."""


class Fault(Exception):
    """A methodResponse fault (what the driver answered instead of a value)."""

    def __init__(self, code: int, string: str) -> None:
        super().__init__(code, string)
        self.code = code
        self.string = string

    def __str__(self) -> str:
        return f"<Fault {self.code}: {self.string!r}>"


# ---------------------------------------------------------------- decoding

def _to_bool(text: str) -> bool:
    if text == "1":
        return True
    if text == "0":
        return False
    raise XMLRPCError(f"bad boolean value {text!r}")


def _to_int(text: str) -> int:
    # int() accepts surrounding blanks, a sign and underscores, as
    # xmlrpc.client does; mirror it rather than be stricter or looser.
    return int(text)


def _to_base64(text: str) -> bytes:
    return binascii.a2b_base64(text.encode("ascii"))


# Leaf element -> converter of its text. "name" is a struct member's key.
_SCALARS = {
    "nil": lambda text: None,
    "boolean": _to_bool,
    "int": _to_int,
    "i1": _to_int,
    "i2": _to_int,
    "i4": _to_int,
    "i8": _to_int,
    "biginteger": _to_int,
    "double": float,
    "float": float,
    "string": str,
    "name": str,
    "base64": _to_base64,
    "dateTime.iso8601": str,
}
_CONTAINERS = {"array", "struct", "value", "member"}
_FRAMING = {"methodCall", "methodResponse", "methodName", "params", "param", "fault", "data"}


class _Decoder:
    """expat callbacks building values on one flat stack (no recursion)."""

    def __init__(self, root: str) -> None:
        self.expected_root = root
        self.root: str | None = None
        self.stack: list = []
        self.marks: list[int] = []  # stack heights where open containers began
        self.data: list[str] = []
        self.bare_value = False  # inside <value> with no type element yet
        self.method_name: str | None = None
        self.kind: str | None = None  # "params" or "fault" once seen

    def start(self, tag: str, attrs: dict) -> None:
        tag = tag.rpartition(":")[2]  # "ex:nil" (Apache extension) is nil
        if self.root is None:
            if tag != self.expected_root:
                raise XMLRPCError(f"expected <{self.expected_root}>, got <{tag}>")
            self.root = tag
        elif tag not in _SCALARS and tag not in _CONTAINERS and tag not in _FRAMING:
            raise XMLRPCError(f"unexpected element <{tag}>")
        if tag in _CONTAINERS:
            self.marks.append(len(self.stack))
        self.bare_value = tag == "value"
        self.data = []

    def chars(self, text: str) -> None:
        self.data.append(text)

    def end(self, tag: str) -> None:
        tag = tag.rpartition(":")[2]
        text = "".join(self.data)
        convert = _SCALARS.get(tag)
        try:
            if convert is not None:
                self.stack.append(convert(text))
            elif tag in _CONTAINERS:
                self._end_container(tag, text)
            elif tag == "methodName":
                self.method_name = text
            elif tag in ("params", "fault"):
                self.kind = tag
        except (ValueError, binascii.Error) as e:
            if isinstance(e, XMLRPCError):
                raise
            raise XMLRPCError(f"bad <{tag}> value {text[:40]!r}: {e}") from None
        self.bare_value = False

    def _end_container(self, tag: str, text: str) -> None:
        mark = self.marks.pop()
        if tag == "value":
            if self.bare_value:  # <value>text</value> is a string
                self.stack.append(text)
            if len(self.stack) != mark + 1:
                raise XMLRPCError("a <value> must hold exactly one value")
        elif tag == "member":
            if len(self.stack) != mark + 2 or not isinstance(self.stack[mark], str):
                raise XMLRPCError("a struct <member> must hold one <name> and one <value>")
        elif tag == "array":
            self.stack[mark:] = [self.stack[mark:]]
        else:  # struct: members left (name, value) pairs
            items = self.stack[mark:]
            if len(items) % 2 or not all(isinstance(k, str) for k in items[::2]):
                raise XMLRPCError("a <struct> may only hold <member> elements")
            self.stack[mark:] = [dict(zip(items[::2], items[1::2]))]


def _parse(data: "str | bytes", root: str) -> _Decoder:
    decoder = _Decoder(root)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = decoder.start
    parser.EndElementHandler = decoder.end
    parser.CharacterDataHandler = decoder.chars

    def refuse_dtd(*_args: object) -> None:
        # Entities can only be declared in a DTD: refusing it up front stops
        # every expansion attack before expat reads a single declaration.
        raise XMLRPCError("a document type declaration is not allowed")

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise XMLRPCError(f"not well-formed XML: {e}") from None
    if decoder.root is None:
        raise XMLRPCError(f"expected <{root}>")
    return decoder


def loads_call(data: "str | bytes") -> "tuple[str, tuple]":
    """Decode a methodCall -> (methodName, params)."""
    decoder = _parse(data, "methodCall")
    if decoder.method_name is None:
        raise XMLRPCError("methodCall has no <methodName>")
    return decoder.method_name, tuple(decoder.stack)


def loads_response(data: "str | bytes") -> object:
    """Decode a methodResponse -> its one value; a fault raises Fault."""
    decoder = _parse(data, "methodResponse")
    if decoder.kind == "fault":
        fault = decoder.stack[0] if len(decoder.stack) == 1 else None
        if not (
            isinstance(fault, dict)
            and isinstance(fault.get("faultCode"), int)
            and isinstance(fault.get("faultString"), str)
        ):
            raise XMLRPCError("a fault must be a struct with int faultCode and string faultString")
        raise Fault(fault["faultCode"], fault["faultString"])
    if decoder.kind != "params" or len(decoder.stack) != 1:
        raise XMLRPCError("a methodResponse must hold exactly one param or a fault")
    return decoder.stack[0]


# ---------------------------------------------------------------- encoding

_escape_table: "dict[int, str] | None" = None


def escape(text: str) -> str:
    """Escape text for element content.

    Beyond xmlrpc.client (& < >) it writes CR as &#13; so it survives XML's
    line-end normalisation, and it replaces what XML 1.0 cannot carry at
    all (C0 controls, lone surrogates from undecodable file names, U+FFFE/F)
    with U+FFFD: the alternative is a response xapi cannot parse.
    """
    global _escape_table
    if _escape_table is None:
        table = {c: "\ufffd" for c in range(0x20) if c not in (0x9, 0xA)}
        table.update({c: "\ufffd" for c in range(0xD800, 0xE000)})
        table.update({0xFFFE: "\ufffd", 0xFFFF: "\ufffd"})
        table.update({ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", 0xD: "&#13;"})
        _escape_table = table
    return text.translate(_escape_table)


def _dump(value: object, out: "list[str]") -> None:
    # bool before int: bool is an int subclass.
    if value is None:
        out.append("<value><nil/></value>\n")
    elif isinstance(value, bool):
        out.append(f"<value><boolean>{int(value)}</boolean></value>\n")
    elif isinstance(value, int):
        if not MININT <= value <= MAXINT:
            raise OverflowError(f"int {value} exceeds XML-RPC limits (return it as a string)")
        out.append(f"<value><int>{int(value)}</int></value>\n")
    elif isinstance(value, float):
        out.append(f"<value><double>{value!r}</double></value>\n")
    elif isinstance(value, str):
        out.append(f"<value><string>{escape(value)}</string></value>\n")
    elif isinstance(value, (bytes, bytearray)):
        encoded = binascii.b2a_base64(bytes(value)).decode("ascii")
        out.append(f"<value><base64>\n{encoded}</base64></value>\n")
    elif isinstance(value, dict):
        out.append("<value><struct>\n")
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"struct keys must be strings, not {type(key).__name__}")
            out.append(f"<member>\n<name>{escape(key)}</name>\n")
            _dump(item, out)
            out.append("</member>\n")
        out.append("</struct></value>\n")
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>\n")
        for item in value:
            _dump(item, out)
        out.append("</data></array></value>\n")
    else:
        raise TypeError(f"cannot marshal {type(value).__name__} objects")


def dumps_response(value: object) -> str:
    """A methodResponse carrying one value."""
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"]
    _dump(value, out)
    out.append("</param>\n</params>\n</methodResponse>\n")
    return "".join(out)


def dumps_fault(code: int, string: str) -> str:
    """A methodResponse fault."""
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<fault>\n"]
    _dump({"faultCode": code, "faultString": string}, out)
    out.append("</fault>\n</methodResponse>\n")
    return "".join(out)


def dumps_call(method_name: str, params: "tuple | list") -> str:
    """A methodCall (what a toolstack passes to a driver)."""
    out = [f"<?xml version='1.0'?>\n<methodCall>\n<methodName>{escape(method_name)}</methodName>\n"]
    out.append("<params>\n")
    for param in params:
        out.append("<param>\n")
        _dump(param, out)
        out.append("</param>\n")
    out.append("</params>\n</methodCall>\n")
    return "".join(out)
