"""The layers of mpidml/ import only downwards (README, Architecture): a module of one
layer never imports from a layer above it, and the two faces (the command line and the
Python API) never import each other. Read from the source, every import statement
(the lazy ones inside functions too)."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mpidml")
# lowest first; modules at the top of the package are placed by name
# (compat: scikit-learn or a stand-in, and __version__, import nothing of mpidml's)
LAYERS = {"errors": 0, "config": 0, "compat": 0, "__version__": 0, "runtime": 1, "files": 2, "data": 3,
          "learn": 4, "training": 5, "cli": 6, "api": 6, "__main__": 7, "__init__": 7}


def modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                yield ".".join(rel), path


def layer_of(dotted):
    """The layer of a module named relative to mpidml ("learn.trainer", "errors")."""
    head = dotted.split(".")[0]
    return head, LAYERS[head]


def exists(parts):
    where = os.path.join(ROOT, *parts)
    return os.path.isfile(where + ".py") or os.path.isdir(where)


def imports(dotted, path):
    """The mpidml modules (relative to mpidml) that a module imports: `from PACKAGE import
    name` gives PACKAGE.name where that is a module (always for `from . import name`),
    else PACKAGE."""
    package = dotted.split(".")[:-1]
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == "mpidml" or node.module.startswith("mpidml.")):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                whole = target + [alias.name]
                # `from . import x`: x must be a module (the subpackages' __init__ define nothing)
                yield ".".join(whole if exists(whole) or not target or node.module is None else target)
        elif isinstance(node, ast.Import):
            yield from (a.name[len("mpidml."):] for a in node.names if a.name.startswith("mpidml."))


def test_every_module_has_a_layer():
    assert {layer_of(m)[0] for m, _ in modules()} <= set(LAYERS)


@pytest.mark.parametrize("dotted, path", sorted(modules()))
def test_imports_go_downwards(dotted, path):
    here, level = layer_of(dotted)
    for target in imports(dotted, path):
        assert target == "__version__" or exists(target.split(".")), \
            f"{dotted} imports mpidml.{target}, which does not exist"
        there, below = layer_of(target)
        assert below <= level, f"{dotted} (layer {here}) imports {target} (layer {there}, above it)"
        if below == level and there != here and level < 7:
            pytest.fail(f"{dotted} imports {target}: {here} and {there} are neighbours, not layers of each other")


def test_the_python_api_never_loads_the_command_line():
    """api.py checks its options through training/options.py, as the command line does."""
    assert not [t for t in imports("api", os.path.join(ROOT, "api.py")) if t.startswith("cli")]
