"""The import rules of docs/architecture.md, checked on the source: no import cycles among the
project's modules (function-level imports count), `failover` imports nothing of the project,
and the gateway's production code never imports the sandbox; and the module map: no module of
the two apps passes 400 lines, and docs/architecture.md names each."""

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("failover", "mailservice", "sandbox", "smtest")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # generated; they import only Django
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every module name an import statement anywhere in the file (top level, in a function,
    under TYPE_CHECKING) may load, relative imports resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph(*, with_packages: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports. With `with_packages`, also -> each package
    above it, whose `__init__` Python runs before the module itself."""
    modules = project_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
        if with_packages:
            parts = module.split(".")
            graph[module].update(
                ".".join(parts[:end]) for end in range(1, len(parts)) if ".".join(parts[:end]) in modules
            )
        graph.setdefault(module, set())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _package_of(component: list[str], member: str) -> str:
    """The shortest member of the cycle that is `member` or a package above it."""
    return min((other for other in component if member == other or member.startswith(other + ".")), key=len)


class ImportRuleTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.graph = import_graph()

    def test_no_import_cycles(self):
        """No two project modules import each other, directly or through others."""
        self.assertEqual(cycles(self.graph), [])

    def test_no_cycle_through_a_package_init_leaves_the_package(self):
        """A package's `__init__` may re-export its own submodules (models/, api/), but no module
        outside the package may sit on a loop through it: importing that module first would meet
        a partially initialized one."""
        leaving = [
            component
            for component in cycles(import_graph(with_packages=True))
            if len({_package_of(component, member) for member in component}) > 1
        ]
        self.assertEqual(leaving, [])

    def test_cycle_finder_finds_a_cycle(self):
        """The check itself sees a cycle hidden in a function-level import."""
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [["a", "b", "c"]])

    def test_failover_imports_nothing_of_the_project(self):
        """failover is a reusable app: it imports only Django, Anymail and the standard library."""
        leaks = {
            (module, target)
            for module, targets in self.graph.items()
            if module.split(".")[0] == "failover"
            for target in targets
            if target.split(".")[0] != "failover"
        }
        self.assertEqual(sorted(leaks), [])

    def test_gateway_never_imports_the_sandbox(self):
        """mailservice and smtest never import sandbox (a development tool)."""
        leaks = {
            (module, target)
            for module, targets in self.graph.items()
            if module.split(".")[0] in ("mailservice", "smtest")
            for target in targets
            if target.split(".")[0] == "sandbox"
        }
        self.assertEqual(sorted(leaks), [])


MAX_MODULE_LINES = 400
MAPPED = ("failover", "mailservice")


def mapped_files() -> list[Path]:
    """The modules docs/architecture.md maps: the two apps' code, without migrations."""
    return sorted(
        path
        for package in MAPPED
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and "commands" not in path.parts
    )


class ModuleMapTests(SimpleTestCase):
    def test_no_module_passes_the_size_where_it_splits(self):
        """No module of failover/ or mailservice/ passes 400 lines (split it by job first)."""
        long = {
            str(path.relative_to(ROOT)): lines
            for path in mapped_files()
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
        }
        self.assertEqual(long, {})

    def test_the_map_names_every_module(self):
        """docs/architecture.md names each module of the two apps, so the map stays true."""
        text = (ROOT / "docs" / "architecture.md").read_text()
        unnamed = [
            str(path.relative_to(ROOT))
            for path in mapped_files()
            if path.name != "__init__.py" and f"{path.name}`" not in text
        ]
        self.assertEqual(unnamed, [])
