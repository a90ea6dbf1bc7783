"""The import graph of smlib: no cycles, and no arrow from a lower layer up.

Every import counts: module level, inside functions (deferred for start-up
cost) and under ``TYPE_CHECKING`` alike, since each is a dependency a reader
must follow. Layers, lowest first (a module may import its own layer and
those below it):

    0  smlib.uuids, smlib.config, smlib.faults, smlib.protocol
    1  smlib.vhd
    2  smlib.stores
    3  smlib.tree, smlib.xapi, smlib.datapath
    4  smlib.drivers
    5  smlib.toolstack
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYERS = {
    "smlib": 0, "smlib.uuids": 0, "smlib.config": 0, "smlib.faults": 0, "smlib.protocol": 0,
    "smlib.vhd": 1,
    "smlib.stores": 2,
    "smlib.tree": 3, "smlib.xapi": 3, "smlib.datapath": 3,
    "smlib.drivers": 4,
    "smlib.toolstack": 5,
}


def modules() -> dict[str, str]:
    """Every module of smlib: dotted name -> file."""
    found = {}
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "smlib")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[: -len(".__init__")]
                found[dotted] = path
    return found


def imports(name: str, path: str, known: set[str]) -> set[str]:
    """The smlib modules ``name`` imports (a ``from pkg import mod`` counts
    as importing mod, not pkg)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            subs = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
            out.update(subs if len(subs) == len(node.names) else subs + [source])
    return {m for m in out if m in known and m != name}


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add its package to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_is_read():
    # The parser sees real arrows (a broken resolver would make both tests vacuous).
    assert "smlib.protocol.errors" in GRAPH["smlib.protocol.sr"]
    assert "smlib.vhd.format" in GRAPH["smlib.vhd.image"]
    assert "smlib.tree.tree" in GRAPH["smlib.drivers.tree_sr"]


def test_no_import_cycle():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_upwards(module):
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert upward == [], f"{module} (layer {layer(module)}) imports a higher layer"
