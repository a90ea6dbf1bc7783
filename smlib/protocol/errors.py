"""SRError: storage errors as values carrying the real storage-manager codes.

The code table is read from XE_SR_ERRORCODES.xml (beside this module) with
lxml, only when the first error is built: the driver's start-up path never
pays for lxml.
"""

import os

ERRORCODES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "XE_SR_ERRORCODES.xml")

_table: "dict[str, tuple[int, str]] | None" = None


def load_table(path: str = ERRORCODES_FILE) -> "dict[str, tuple[int, str]]":
    """Parse an error-code file into {name: (value, description)}."""
    from lxml import etree  # deferred: ~20 ms of import the happy path skips

    # The file is trusted, but never let a parser fetch or expand anything.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(path, parser).getroot()
    if root.tag != "SM-errorcodes":
        raise ValueError(f"{path}: root element is {root.tag!r}, not SM-errorcodes")
    table: dict[str, tuple[int, str]] = {}
    for code in root.iterfind("code"):
        name = (code.findtext("name") or "").strip()
        value = (code.findtext("value") or "").strip()
        if not name or not value.isdigit():
            raise ValueError(f"{path}: malformed <code> entry near line {code.sourceline}")
        if name in table:
            raise ValueError(f"{path}: duplicate error name {name}")
        table[name] = (int(value), (code.findtext("description") or "").strip())
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
