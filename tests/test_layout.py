"""The layout holds: `smw` is the ground floor, the layers stand side by side on it, and the
tooling in `tools` is imported by no runtime module.

The imports of every module are read from its source (module level and inside functions
alike), so a lazy import across layers counts too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GROUND = "smw"
LAYERS = ("datasets", "ingest", "batch", "streaming", "webapp")
TOOLING = "tools"
# What a layer may import besides the ground floor and itself: ingest replays datasets.
ALSO_ALLOWED = {"ingest": {"datasets"}}
# Modules of the ground floor that must import without pyspark (the web app and the
# producers run without it); the Spark adapters import it inside their functions.
PURE_WITHOUT_PYSPARK = ("smw.schema", "smw.messages", "smw.alert", "smw.energy", "smw.config", "smw.zones",
                        "smw.contract", "smw.jobs", "smw.spark", "smw.cql", "smw.rethink", "smw.init", "smw.jars",
                        "smw.kafka_clients", "smw.ship")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The project modules a source file imports (relative imports resolved).

    `from pkg import name` imports the module pkg.name when there is one, else pkg itself.
    """
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found & modules


def project_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports, over the ground floor, the layers and the tooling."""
    paths = {}
    for top in (GROUND, *LAYERS, TOOLING):
        for path in sorted((root / top).rglob("*.py")):
            paths[module_name(path, root)] = path
    return {name: imports_of(path, root, set(paths)) - {name} for name, path in paths.items()}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that crosses the layout's rules, as 'importer -> imported: why'."""
    found = []
    for importer, imported in sorted(graph.items()):
        top = importer.split(".")[0]
        for target in sorted(imported):
            target_top = target.split(".")[0]
            if target_top == top or top == TOOLING:
                continue
            if target_top == TOOLING:
                found.append(f"{importer} -> {target}: runtime code imports the tooling")
            elif top == GROUND:
                found.append(f"{importer} -> {target}: the ground floor imports a layer")
            elif target_top != GROUND and target_top not in ALSO_ALLOWED.get(top, set()):
                found.append(f"{importer} -> {target}: a layer imports another layer")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import loops between modules (strongly connected components of more than one module)."""
    index, low, on_stack, stack, loops = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return loops


def test_layers_import_only_the_ground_floor_and_themselves():
    assert violations(project_graph(ROOT)) == []


def test_no_import_loops():
    assert cycles(project_graph(ROOT)) == []


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("relative, source, why", [
    ("streaming/job.py", "from batch import nightly\n", "a layer imports another layer"),
    ("streaming/job.py", "def f():\n    import batch.nightly\n", "a layer imports another layer"),
    ("smw/core.py", "from streaming import job\n", "the ground floor imports a layer"),
    ("webapp/view.py", "from tools import bench\n", "runtime code imports the tooling"),
    ("batch/nightly.py", "from datasets import gen\n", "a layer imports another layer"),
])
def test_the_check_catches_a_crossing_import(tmp_path, relative, source, why):
    files = {"smw/__init__.py": "", "smw/core.py": "", "streaming/__init__.py": "", "streaming/job.py": "",
             "batch/__init__.py": "", "batch/nightly.py": "", "webapp/__init__.py": "", "webapp/view.py": "",
             "datasets/__init__.py": "", "datasets/gen.py": "", "tools/__init__.py": "", "tools/bench.py": "",
             "ingest/__init__.py": ""}
    files[relative] = source
    write_tree(tmp_path, files)
    assert [v.split(": ", 1)[1] for v in violations(project_graph(tmp_path))] == [why]


def test_allowed_imports_pass_the_check(tmp_path):
    write_tree(tmp_path, {
        "smw/__init__.py": "", "smw/core.py": "", "datasets/__init__.py": "", "datasets/gen.py": "",
        "ingest/__init__.py": "", "ingest/replay.py": "from datasets import gen\nfrom smw import core\nfrom . import x\n",
        "ingest/x.py": "", "tools/__init__.py": "", "tools/bench.py": "from ingest import replay\n",
        "streaming/__init__.py": "", "batch/__init__.py": "", "webapp/__init__.py": "",
    })
    assert violations(project_graph(tmp_path)) == []


def test_the_loop_check_finds_a_loop(tmp_path):
    write_tree(tmp_path, {
        "smw/__init__.py": "", "smw/a.py": "from smw import b\n", "smw/b.py": "def f():\n    from smw import a\n",
        "smw/c.py": "from smw import a\n", "datasets/__init__.py": "", "ingest/__init__.py": "",
        "batch/__init__.py": "", "streaming/__init__.py": "", "webapp/__init__.py": "", "tools/__init__.py": "",
    })
    assert cycles(project_graph(tmp_path)) == [["smw.a", "smw.b"]]


def test_the_ground_floor_imports_without_pyspark():
    """Its Spark adapters import pyspark inside their functions; a process without pyspark can use the rest."""
    blocker = (
        "import sys\n"
        "class NoPyspark:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pyspark' or name.startswith('pyspark.'):\n"
        "            raise ImportError('pyspark is blocked in this test')\n"
        "sys.meta_path.insert(0, NoPyspark())\n"
        f"for name in {PURE_WITHOUT_PYSPARK!r}:\n"
        "    __import__(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
