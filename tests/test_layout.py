"""The package's layout keeps its rules: no import cycles, lower stages never import higher ones.

The imports are read from the source (``ast``), lazy imports inside functions included, so a
cycle that only shows at run time in some order of first calls is caught here too.

Stages, lowest first (README, ARCHITECTURE):
    core          spec, codegen, launch, runtime, plans, direct, traced, resources, cache_io
    reference     plain-torch semantics
    kernels       launchers
    ops           custom ops and autograd
    functional    torch.nn.functional-style functions
    nn            modules
    tuning, aot, integrations, bench, cli   tools beside the pipeline
"""

from __future__ import annotations

import ast
import json
import pathlib

import pytest

import tgpool

ROOT = pathlib.Path(tgpool.__file__).parent
CORE = {
    "spec",
    "codegen",
    "launch",
    "runtime",
    "plans",
    "direct",
    "traced",
    "resources",
    "cache_io",
}

#: stage -> the stages it may import (besides itself and the core)
MAY_IMPORT = {
    "core": set(),
    "reference": set(),
    "kernels": set(),
    "ops": {"kernels"},
    "functional": {"ops", "kernels", "reference"},
    "nn": {"functional", "ops", "kernels", "reference"},
    "tuning": {"kernels"},
    "aot": {"kernels", "ops"},
    "integrations": {"nn", "functional", "ops", "kernels", "reference"},
    "bench": {"functional", "nn", "ops", "kernels", "reference", "tuning", "integrations"},
    "cli": {
        *("functional", "nn", "ops", "kernels", "reference"),
        *("tuning", "aot", "bench", "integrations"),
    },
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The tgpool modules ``name`` imports, anywhere in its source (functions included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + [node.module or ""]).strip(
                    "."
                )
            else:
                base = node.module or ""
            submodules = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found.update(submodules)
            if base in MODULES and len(submodules) < len(node.names):
                found.add(base)  # a name defined by the package itself
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
    found.discard(name)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def stage(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "package"  # tgpool/__init__.py: the public names, above every stage
    if len(parts) == 2 and parts[1] in CORE | {"__main__"}:
        return "core" if parts[1] in CORE else "package"
    return parts[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None. An import of an enclosing package (``from ..
    import x`` reaching ``tgpool/__init__.py``) is an edge like any other."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_no_import_cycles():
    # a package __init__ importing its own submodules is how packages work, not a cycle; the
    # edge back (a submodule importing an enclosing package) is what can close one
    graph = {
        m: {t for t in targets if not (t.startswith(m + ".") and MODULES[m].name == "__init__.py")}
        for m, targets in GRAPH.items()
    }
    graph = {
        m: {t for t in ts if not m.startswith(t + ".") or t == "tgpool"} for m, ts in graph.items()
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_lower_stages_never_import_higher_ones():
    wrong = []
    for name, targets in GRAPH.items():
        s = stage(name)
        if s == "package":
            continue
        allowed = MAY_IMPORT[s] | {s, "core"}
        for t in targets:
            if t == "tgpool":  # `import tgpool` inside a function: only the tools may
                if s not in ("tuning", "bench", "cli", "integrations"):
                    wrong.append((name, t))
                continue
            if stage(t) not in allowed:
                wrong.append((name, t))
    assert wrong == []


def test_launch_does_not_import_tuning():
    assert not any(t.startswith("tgpool.tuning") for t in GRAPH["tgpool.launch"])
    # the tuner registers itself instead
    from tgpool import launch
    from tgpool.tuning import tuner

    assert launch.get_provider() is tuner.cached_config


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= 420, f"{name} has {lines} lines: split it"


#: every public name of tgpool, tgpool.functional and tgpool.nn before the package was split by
#: stage (read off that version); each must still be importable from the same place
PUBLIC_NAMES = json.loads((pathlib.Path(__file__).parent / "public_names.json").read_text())


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_public_names_stay_importable(module):
    import importlib

    m = importlib.import_module(module)
    missing = [n for n in PUBLIC_NAMES[module] if not hasattr(m, n)]
    assert missing == []


def test_layout_table_in_readme_matches_the_tree():
    """Every module of the package is named in the README's ARCHITECTURE tree, and every file the
    tree names exists."""
    readme = (ROOT.parent / "README.md").read_text()
    section = readme.split("## ARCHITECTURE", 1)[1].split("\n## ", 1)[0]
    tree = next(b for b in section.split("```")[1::2] if b.strip().startswith("tgpool/"))
    named, folder = set(), None
    for line in tree.splitlines():
        word = (line.split() or [""])[0]
        indent = len(line) - len(line.lstrip())
        if indent == 2 and word.endswith("/"):
            folder = word.rstrip("/")
        elif indent == 2 and word.endswith(".py"):
            folder = None
            named.add(word)
        elif indent == 4 and word.endswith(".py") and folder:
            named.add(f"{folder}/{word}")
    files = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")}
    assert sorted(files - named) == []
    assert sorted(named - files) == []
