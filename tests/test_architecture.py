"""The package's shape, checked: the engine stays behind the backend, modules do not import
each other in a circle, and no module or class grows past what a newcomer can read.

These read the source (no engine needed). They fail when someone imports the docker SDK in
the scheduler again, or lets the scheduler and the supervisor call into each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "conveyor"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """Modules of the package that ``name`` imports (at import time, if top_level_only)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _statements(tree.body, descend=not top_level_only):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def _statements(body: list[ast.stmt], descend: bool):
    """The statements of ``body`` (and, with ``descend``, of every function and block in it,
    ``if TYPE_CHECKING:`` blocks included: two modules that name each other even only in
    annotations know each other, which is the coupling this guards against)."""
    for node in body:
        if not descend and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # not imported when the module loads
        yield node
        if descend or isinstance(node, (ast.If, ast.Try)):  # module-level try/if still import
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    if isinstance(child, ast.ExceptHandler):
                        yield from _statements(child.body, descend)
                    elif isinstance(child, ast.stmt):
                        yield from _statements([child], descend)


def test_only_the_docker_api_backends_import_the_docker_sdk():
    offenders = []
    for name, path in _modules().items():
        if name.startswith(("conveyor.backends.docker", "conveyor.backends.swarm")):  # both speak the Engine API
            continue
        imported = _imports(name, path, top_level_only=False)
        if any(m == "docker" or m.startswith(("docker.", "requests", "urllib3")) for m in imported):
            offenders.append(name)
    assert offenders == [], f"modules outside backends/docker and backends/swarm that import the engine SDK: {offenders}"


def _cycles(top_level_only: bool) -> list[list[str]]:
    modules = _modules()
    graph = {
        name: {m for m in _imports(name, path, top_level_only) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package imports its own submodules to re-export them; that is not a cycle of concerns.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_among_the_packages_modules():
    assert _cycles(top_level_only=True) == []


def test_no_cycle_even_through_deferred_or_annotation_imports():
    """Imports inside functions (deferred to keep `conveyor --help` fast) and for type
    annotations count too: before the reshape, the scheduler named the supervisor in its
    annotations while the supervisor imported the scheduler, and each called into the other."""
    assert _cycles(top_level_only=False) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_and_class_sizes(name):
    path = _modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{name}.{node.name} has {length} lines"


def test_the_cli_and_library_do_not_load_the_engine_sdk_or_the_server_to_start():
    """`conveyor --help`, `conveyor ps` and `from conveyor import Executor, Client` must not
    pay for the docker SDK (~0.2 s) or FastAPI/uvicorn: they load when a job needs the engine
    or `serve` starts."""
    import subprocess
    import sys

    code = (
        "import sys, conveyor.cli, conveyor.executor, conveyor.client\n"
        "from conveyor import Executor, Client, JobSpec\n"
        "print(sorted(m for m in ('docker', 'fastapi', 'uvicorn', 'requests') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
