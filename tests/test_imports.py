"""The import graph of `keras_cae` (with `keras_cae.export`, from the `export/` folder), read
from the source: no cycles. The direction (CLI -> export -> library) is import-linter's
contracts in pyproject.toml, run by tests/test_habits.py.

Every `import` statement counts, including those inside functions (lazy imports),
since a lazy import circle is still a circle a reader must untangle. Names loaded by
`importlib` from strings (the packages' PEP 562 `__getattr__`) are not seen.
"""

from __future__ import annotations

import ast

from tests._sources import source_modules


def _graph() -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports."""
    modules = source_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        with open(path, encoding="utf-8") as stream:
            tree = ast.parse(stream.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from package import module` imports the module; otherwise the name's module.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a package.
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_source():
    graph = _graph()
    assert "keras_cae.cli.train" in graph["keras_cae.cli"]
    assert "keras_cae.cli.errors" in graph["keras_cae.cli.train"]
    assert "keras_cae._io" in graph["keras_cae.export._export"]
    assert (
        "keras_cae.export.serving" in graph["keras_cae.cli.serve"]
    )  # A lazy import, inside `run`.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    assert _cycles(_graph()) == []


def test_private_cpython_api_for_modules_being_imported(tmp_path, monkeypatch):
    """`keras_cae._initializing` reads CPython's private `ModuleSpec._initializing`, the
    one private Python API the package uses. If this fails after a Python upgrade, update
    that function (and the import hook that relies on it)."""
    import sys

    import keras_cae

    where = (
        f"Python {sys.version.split()[0]} changed `ModuleSpec._initializing`, which "
        "keras_cae._initializing reads; update that function:"
    )
    name = "_keras_cae_probe_initializing"
    (tmp_path / f"{name}.py").write_text(
        "import sys\nimport keras_cae\nDURING = keras_cae._initializing(sys.modules[__name__])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = __import__(name)
    try:
        assert module.DURING is True, f"{where} not set while the module runs"
        assert keras_cae._initializing(module) is False, f"{where} still set after the import"
    finally:
        sys.modules.pop(name, None)
