"""The layers of docs/architecture.md, as the imports of rekd_jax/ have them: each package
imports only the layers below it (training and evaluation never each other), and nothing in
the library imports the top-level configs package. Imports by name count too
(`importlib.import_module("rekd_jax.x")`, f-strings that start with a module path, a string
that is a module path). core/ holds no knowledge of the application: none of its strings is a
mode, a dataset or a recipe, and it reads no config field but `mode`."""

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(REPO, "rekd_jax")

# What each unit of rekd_jax/ (a sub-package or a top-level module) may import, bottom up.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "data": {"core"},
    "methods": {"core"},
    "variants": set(),
    # The pre-training config's fields and defaults (the recipes' base, the run signature's).
    "defaults": {"core", "data", "methods"},
    "readout": {"core", "models"},
    "training": {"core", "models", "data", "methods", "readout", "defaults", "variants"},
    "evaluation": {"core", "models", "data", "readout", "variants"},
    # Every recipe: pre-training's (on defaults), evaluation's (on evaluation.config)
    # and the quick start's plan.
    "recipes": {"core", "data", "methods", "defaults", "variants", "training", "evaluation"},
    "tools": {"core", "models", "data"},
    "experiments": {
        "core",
        "models",
        "data",
        "methods",
        "readout",
        "recipes",
        "defaults",
        "variants",
        "training",
        "evaluation",
        "tools",
    },
    # The command-line layer: recipe lookup by name (the only importer of rekd_jax.configs),
    # the closing summaries, app, --help and the command line itself.
    "config_lookup": {"core", "configs"},
    "run_summary": {"core", "evaluation"},
    "app": {"core", "methods", "training", "evaluation", "experiments", "run_summary"},
    "cli_help": {"core", "variants", "config_lookup"},
    "cli": {"core", "app", "cli_help", "config_lookup"},
    "__init__": set(),
}
# A string that names a module of the library.
MODULE_PATH = re.compile(r"^rekd_jax(\.[A-Za-z_]\w*)+\.?$")


def _leading_text(node):
    """The constant text a string expression starts with ('' for none)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _leading_text(node.values[0])
    return ""


def _named_imports(tree):
    """(line, module) of imports by name: the library's module paths in strings, f-strings
    included (`importlib.import_module(f"rekd_jax.configs.{name}")`)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Constant, ast.JoinedStr)):
            text = _leading_text(node)
            if MODULE_PATH.match(text) or (
                isinstance(node, ast.JoinedStr) and text.startswith("rekd_jax.")
            ):
                yield node.lineno, text.rstrip(".")


def _imports(path):
    """(line, imported module) of every import in a file, nested ones and imports by name
    included."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    yield from sorted(set(_named_imports(tree)))
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


def _application_names():
    """What core/ must not name: every mode (rekd_jax.app), dataset (the dataset presets of
    rekd_jax.variants and the TFDS names they select) and recipe (the configs/ folder)."""
    from rekd_jax import app, variants

    modes = set(app.modes())
    datasets = set(variants.DATASETS) | {preset["dataset"] for preset in variants.DATASETS.values()}
    recipes = {name[:-3] for name in os.listdir(os.path.join(REPO, "configs"))}
    return modes | datasets | {r for r in recipes if not r.startswith("_")}


def _config_fields():
    """The top-level fields of the pre-training and evaluation configs."""
    from rekd_jax import recipes
    from rekd_jax.evaluation import config as eval_config

    return set(recipes.base_config()) | set(eval_config.default_eval_config())


def _docstring_nodes(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                yield body[0].value


def _strings(tree):
    """(line, text) of every string of a module but its docstrings, f-string parts included."""
    docstrings = {id(node) for node in _docstring_nodes(tree)}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def _config_reads(tree):
    """(line, field) of every `config.FIELD`, `config.get("FIELD")` and `config["FIELD"]`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "config" and node.attr not in ("get", "to_dict", "items", "keys"):
                yield node.lineno, node.attr
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "config"
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield node.lineno, node.args[0].value


def test_core_names_no_mode_dataset_recipe_or_config_field():
    """core/ is the ground floor: the application's names live above it. `mode` is the one
    field core reads (a workdir holds runs of one mode: rekd_jax.core.run_record)."""
    names, fields = _application_names(), _config_fields() - {"mode"}
    words = re.compile(r"[A-Za-z0-9_/]+")
    found = []
    for path in _library_files():
        if _unit(path) != "core":
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        where = os.path.relpath(path, REPO)
        for line, text in _strings(tree):
            for word in set(words.findall(text)) & names:
                found.append(f"{where}:{line} names {word!r} in {text!r}")
        for line, field in _config_reads(tree):
            if field in fields:
                found.append(f"{where}:{line} reads config.{field}")
    assert not found, "\n".join(found)
