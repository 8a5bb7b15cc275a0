"""The command line only parses and prints: every subcommand uses the public API.

Each module of :mod:`astrodask.commands` may import, from the package,
public names (``from astrodask import X`` with ``X`` in ``astrodask._API``),
the helpers of :mod:`astrodask.commands` and :mod:`astrodask.errors`;
nothing else, so a notebook can do all that the command line does. Imports
inside functions count too.
"""

import ast
import textwrap
from pathlib import Path

import pytest

import astrodask

COMMANDS = Path(astrodask.__file__).parent / "commands"
#: Modules a subcommand may import anything from.
ALLOWED_MODULES = {"astrodask.commands", "astrodask.errors"}


def _absolute(node, module):
    """The absolute module of an ``ImportFrom`` in ``module`` (astrodask.commands.X)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[:-node.level]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(source, module="astrodask.commands.example"):
    """``(line, what)`` for every import of ``source`` that is not public API."""
    public = set(astrodask._API)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name.split(".")[0] == "astrodask"
                      and alias.name not in ALLOWED_MODULES]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module)
            if target.split(".")[0] != "astrodask" or target in ALLOWED_MODULES:
                continue
            for alias in node.names:
                if target == "astrodask" and alias.name in public:
                    continue
                if target == "astrodask" and f"astrodask.{alias.name}" in ALLOWED_MODULES:
                    continue
                found.append((node.lineno, f"{target}:{alias.name}"))
    return found


def _command_modules():
    return sorted(p for p in COMMANDS.glob("*.py") if p.name != "__init__.py")


def test_every_subcommand_module_is_checked():
    names = {p.stem for p in _command_modules()}
    assert {"run", "merge", "ingest", "evaluate", "train_maskrcnn", "models"} <= names


@pytest.mark.parametrize("path", _command_modules(), ids=lambda p: p.stem)
def test_subcommand_imports_only_public_api(path):
    bad = private_imports(path.read_text(), f"astrodask.commands.{path.stem}")
    assert not bad, f"{path.name} imports non-public names: {bad}"


def test_planted_violations_are_found():
    source = textwrap.dedent("""
        from astrodask import ingest, InputError
        from astrodask.commands import progress_bar
        from astrodask.errors import InputError as E
        from .. import errors

        def run(args):
            from ..engine.run import resolve_config
            from astrodask import summary_text
            from astrodask.train.maskrcnn_eval import TEST_SEED
            import astrodask.storage
            from ..progress import TextProgress
    """)
    bad = [what for _, what in private_imports(source)]
    assert bad == ["astrodask.engine.run:resolve_config", "astrodask:summary_text",
                   "astrodask.train.maskrcnn_eval:TEST_SEED", "astrodask.storage",
                   "astrodask.progress:TextProgress"]


def test_every_public_name_resolves():
    for name in astrodask._API:
        assert getattr(astrodask, name) is not None, name


# Validation lives in the API, so a notebook gets the same one-line errors as the CLI.

def test_train_settings_validate_and_parse_class_weights():
    from astrodask import InputError, TrainSettings

    assert TrainSettings(class_weights="1,4,1").class_weights == (1.0, 4.0, 1.0)
    for weights in ("1,0,1", "1,2", "a,b,c", (1, 1)):
        with pytest.raises(InputError, match="class_weights needs 3 positive numbers"):
            TrainSettings(class_weights=weights)
    for bad, match in (({"crop_size": 100}, "multiple of 64"), ({"steps": 0}, "positive"),
                       ({"gradient_probability": 2.0}, r"\[0, 1\]"),
                       ({"ema_momentum": 1.0}, r"ema_momentum must be in \[0, 1\)")):
        with pytest.raises(InputError, match=match):
            TrainSettings(**bad)


def test_maskrcnn_config_validates_anchor_factors():
    from astrodask import InputError, MaskRCNNConfig

    assert MaskRCNNConfig(anchor_scale_factors="1,0.5").anchor_scale_factors == (1.0, 0.5)
    for factors in ("0", "1,x", "", (-1.0,)):
        with pytest.raises(InputError, match="anchor_scale_factors needs positive numbers"):
            MaskRCNNConfig(anchor_scale_factors=factors)


def test_cli_bad_class_weights_is_one_line(capsys):
    from astrodask.cli import main

    assert main(["train", "maskrcnn", "unused", "--class-weights", "1,0,1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class_weights needs 3 positive numbers" in err


def test_both_loaders_take_a_shipped_name_or_a_path(tmp_path):
    from astrodask import InputError, load_maskrcnn, load_unet, model_card

    model = load_maskrcnn("maskrcnn_decam")
    assert model.config.bands == tuple(model_card("maskrcnn_decam")["bands"])
    _, card = load_unet("morpheus_decam")
    assert card["name"] == "morpheus_decam"
    for loader in (load_maskrcnn, load_unet, model_card):
        with pytest.raises(InputError, match="is a folder"):
            loader(tmp_path)
        with pytest.raises(InputError, match="unknown model 'nope'"):
            loader("nope")
