"""The layers of docs/architecture.md, as the imports of rekd_jax/ have them: each package
imports only the layers below it (training and evaluation never each other), and nothing in
the library imports the top-level configs package."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(REPO, "rekd_jax")

# What each unit of rekd_jax/ (a sub-package or a top-level module) may import, bottom up.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "data": {"core"},
    "methods": {"core"},
    "variants": set(),
    "readout": {"core", "models"},
    "recipes": {"core", "data", "methods", "variants"},
    "training": {"core", "models", "data", "methods", "readout", "recipes", "variants"},
    "evaluation": {"core", "models", "data", "readout", "recipes", "variants"},
    "tools": {"core", "models", "data"},
    "experiments": {
        "core",
        "models",
        "data",
        "methods",
        "readout",
        "recipes",
        "variants",
        "training",
        "evaluation",
        "tools",
    },
    "app": {"core", "training", "evaluation", "experiments"},
    "cli_help": {"core", "variants"},
    # The command line: the top layer, with app.
    "cli": {"core", "app", "cli_help"},
    "__init__": set(),
}


def _imports(path):
    """(line, imported module) of every import in a file, nested ones included."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "rekd_jax":
                for alias in node.names:
                    yield node.lineno, f"rekd_jax.{alias.name}"
            else:
                yield node.lineno, node.module


def _library_files():
    for root, _, files in os.walk(LIBRARY):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def _unit(path):
    parts = os.path.relpath(path, LIBRARY)[:-3].split(os.sep)
    return parts[0]


def test_every_unit_of_the_library_has_a_layer():
    units = {_unit(p) for p in _library_files()}
    assert units <= set(ALLOWED), f"give {sorted(units - set(ALLOWED))} a row in ALLOWED"


def test_each_layer_imports_only_the_layers_below_it():
    crossings = []
    for path in _library_files():
        unit = _unit(path)
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] == "configs":
                crossings.append(
                    f"{os.path.relpath(path, REPO)}:{line} imports {module}: the "
                    "library builds configs with rekd_jax.recipes"
                )
            elif parts[0] == "rekd_jax" and len(parts) > 1:
                target = parts[1]
                if target != unit and target not in ALLOWED.get(unit, set()):
                    crossings.append(
                        f"{os.path.relpath(path, REPO)}:{line} ({unit}) imports {module} ({target})"
                    )
    assert not crossings, "\n".join(crossings)


def test_training_and_evaluation_never_import_each_other():
    assert "evaluation" not in ALLOWED["training"]
    assert "training" not in ALLOWED["evaluation"]


def _module_name(path):
    parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_two_modules_of_the_library_import_each_other():
    """No import circle between the library's modules, function-level imports included."""
    modules = {_module_name(p): p for p in _library_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                submodules = {f"{node.module}.{a.name}" for a in node.names}
                targets |= (submodules & set(modules)) or {node.module}
        graph[name] = {t for t in targets if t in modules and t != name}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, route = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return route + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, route + [nxt]))
        return None

    # a package's __init__ importing its own submodules is how a package loads: not a circle
    circles = [
        c
        for name in graph
        if (c := cycle_from(name))
        and not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))
    ]
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
