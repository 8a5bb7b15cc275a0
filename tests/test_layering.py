"""Imports go one way: core, io, models, stages, evaluation, simulation, training, then the CLI.

Every ``import`` and ``from ... import`` in the package (also those inside
functions, which hide cycles from the interpreter) is read from the source;
a module may import its own layer and the layers below it, never above.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "astrodask"

#: Lowest first; a top-level module or sub-package of astrodask belongs to one layer.
LAYERS = [
    ("core", {"_version", "errors", "hashing", "storage", "classes", "config", "progress",
              "band_values",
              "framework", "dihedral"}),
    ("io", {"fits_input", "mosaic", "psf", "rescale", "outputs", "sky", "noise_correlation",
            "zeropoints", "background"}),
    ("models", {"models", "morphology"}),
    ("stages", {"ingestion", "engine", "instances", "measure", "merging", "star_galaxy",
                "fragments", "centre_segments", "instance_deblend", "symmetric_residual",
                "residual_detection", "kron"}),
    ("evaluation", {"evaluate", "catalog_scores", "baselines"}),
    ("simulation", {"simulation"}),
    ("training", {"train"}),
    ("interface", {"__init__", "__main__", "demo", "commands", "cli"}),
]
LAYER_OF = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}


def _part(module):
    """Top-level part of a dotted astrodask module name (``engine`` for ``astrodask.engine.run``)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def _module_name(path, package=PACKAGE):
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, package_dir=PACKAGE):
    """Dotted astrodask modules (or ``module.name``) that ``path`` imports, with line numbers."""
    module = _module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if node.module is None:  # "from . import x": x is a module or a name of the package
                found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "astrodask"]


def _target_part(name):
    """The layer part an imported name belongs to (``from astrodask import x`` is the package)."""
    pieces = name.split(".")
    if len(pieces) >= 2 and pieces[1] in LAYER_OF:
        return pieces[1]
    return "__init__"


def test_every_module_has_a_layer():
    parts = {_part(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYER_OF), f"modules without a layer: {sorted(parts - set(LAYER_OF))}"


def test_no_import_goes_up_a_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _part(_module_name(path))
        for name, line in imports_of(path):
            target = _target_part(name)
            if LAYER_OF[target] > LAYER_OF[source]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[LAYER_OF[source]][0]}) "
                              f"imports {name} ({LAYERS[LAYER_OF[target]][0]})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("from ...evaluate import box_iou\n", "astrodask.evaluate"),
    ("from ... import __version__\n", "astrodask.__version__"),
    ("def f():\n    import astrodask.engine.run\n", "astrodask.engine.run"),
])
def test_the_reader_sees_relative_and_absolute_imports(tmp_path, source, expected):
    """The checker itself: a planted upward import is found (so the test above can fail)."""
    module = PACKAGE / "models" / "maskrcnn" / "detection.py"
    fake = tmp_path / "astrodask" / "models" / "maskrcnn" / "detection.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    names = [name for name, _ in imports_of(fake, tmp_path / "astrodask")]
    assert names == [expected]
    # the real module is in the models layer; each planted import would go up from it
    assert LAYER_OF[_target_part(expected)] > LAYER_OF[_part(_module_name(module))]
