"""SRError: storage errors as values carrying the real storage-manager codes.

The code table is read from XE_SR_ERRORCODES.xml (beside this module) with
the standard library's expat (dom0 has no lxml; the XML-RPC codec has loaded
pyexpat already), only when the first error is built: the driver's start-up
path never pays for the parse.
"""

import os

ERRORCODES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "XE_SR_ERRORCODES.xml")

_table: "dict[str, tuple[int, str]] | None" = None


def load_table(path: str = ERRORCODES_FILE) -> "dict[str, tuple[int, str]]":
    """Parse an error-code file into {name: (value, description)}.

    The file is ``<SM-errorcodes>`` holding ``<code>`` elements, each with
    ``<name>``, ``<description>`` and ``<value>`` children."""
    from xml.parsers import expat

    table: dict[str, tuple[int, str]] = {}
    stack: list[str] = []
    entry: dict[str, str] = {}
    started = [0]  # the line of the open <code>

    def start(tag: str, _attrs: dict) -> None:
        if not stack and tag != "SM-errorcodes":
            raise ValueError(f"{path}: root element is {tag!r}, not SM-errorcodes")
        if stack == ["SM-errorcodes"] and tag == "code":
            entry.clear()
            started[0] = parser.CurrentLineNumber
        stack.append(tag)

    def text(data: str) -> None:
        if len(stack) == 3 and stack[1] == "code":
            entry[stack[2]] = entry.get(stack[2], "") + data

    def end(tag: str) -> None:
        stack.pop()
        if stack != ["SM-errorcodes"] or tag != "code":
            return
        name = entry.get("name", "").strip()
        value = entry.get("value", "").strip()
        if not name or not value.isdigit():
            raise ValueError(f"{path}: malformed <code> entry near line {started[0]}")
        if name in table:
            raise ValueError(f"{path}: duplicate error name {name}")
        table[name] = (int(value), entry.get("description", "").strip())

    def refuse_dtd(*_args: object) -> None:
        # The file is trusted, but never let a parser expand anything.
        raise ValueError(f"{path}: a DTD or entity declaration is not allowed")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except expat.ExpatError as e:
            raise ValueError(f"{path}: not well-formed XML: {e}") from None
    return table


def codes() -> "dict[str, tuple[int, str]]":
    """The error table, loaded once per process."""
    global _table
    if _table is None:
        _table = load_table()
    return _table


class SRError(Exception):
    """A storage error with its SM code; smapi turns it into an XML-RPC fault."""

    def __init__(
        self, code: int, name: str, description: str, opterr: "str | None" = None
    ) -> None:
        super().__init__(code, name, description, opterr)
        self.code = code
        self.name = name
        self.description = description
        self.opterr = opterr

    @classmethod
    def from_name(cls, name: str, opterr: "str | None" = None) -> "SRError":
        """Build the error called `name` in the table; unknown name -> KeyError."""
        table = codes()
        if name not in table:
            raise KeyError(f"unknown SR error name {name!r} (not in {ERRORCODES_FILE})")
        value, description = table[name]
        return cls(value, name, description, opterr)

    def __str__(self) -> str:
        if self.opterr is None:
            return self.description
        return f"{self.description} [opterr={self.opterr}]"

    def __repr__(self) -> str:
        return f"SRError({self.code}, {self.name!r}, opterr={self.opterr!r})"
