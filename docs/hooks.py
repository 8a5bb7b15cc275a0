"""MkDocs hooks: the parts of the docs that are generated from the code.

Loaded by ``mkdocs.yml`` (``hooks:``); excluded from the site itself.

- ``<!-- api-reference -->`` in a page becomes one mkdocstrings block per
  public name of :mod:`astrodask` (read from the ``_API`` table of
  ``astrodask/__init__.py`` without importing the package), so the reference
  follows the code when a function moves between modules.
- ``<!-- cli-reference -->`` becomes the ``--help`` of every subcommand, from
  :func:`astrodask.cli.build_parser` (which imports nothing heavy).
- ``<!-- model-cards -->`` becomes a summary of every shipped model card, and
  the card files themselves are published beside the page.
- ``BENCHMARKS.md`` and ``deploy/README.md`` of the repository are published as
  pages (``benchmarks-full.md``, ``deploy-readme.md``) so the docs can
  link to the full records without copying them.
- Sphinx roles left in docstrings (``:func:`astrodask.ingest` ``) become
  cross-references. A role naming ``astrodask.NAME`` must resolve to a public
  name (else a warning, so ``mkdocs build --strict`` fails); deeper targets
  (``astrodask.simulation.presets``) link when documented and stay code
  otherwise.
"""

import argparse
import ast
import json
import os
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "astrodask"
CARDS = PACKAGE / "models" / "weights"

#: Sections of the API reference: title and the public names it holds, in
#: reading order. Public names not listed here land in "Other".
API_SECTIONS = [
    ("Mosaic store (ingest)", ["ingest", "open_mosaic", "Mosaic", "TileGrid"]),
    ("Run the models", ["run", "RunConfig", "resolve_config", "load_config", "RunSummary"]),
    ("Merge and the catalog", ["merge", "MergeOptions", "MergeSummary", "read_catalog"]),
    ("Simulation", ["simulate", "simulate_field", "simulate_fields", "SimulatedField",
                    "read_object_masks"]),
    ("Models and their cards", ["model_card", "configure_framework"]),
    ("Morpheus U-Net and morphology", ["load_unet", "build_unet", "import_morpheus",
                                       "classify_tile", "classify_image", "segment", "deblend",
                                       "object_morphology", "colour_image", "write_colour_png"]),
    ("Mask R-CNN", ["load_maskrcnn", "build_maskrcnn", "MaskRCNNConfig", "detect_sources",
                    "band_statistics", "normalise_bands", "Instances"]),
    ("Training", ["train_unet", "train_maskrcnn", "train_maskrcnn_on_simulations",
                  "TrainSettings"]),
    ("Evaluation", ["evaluate_maskrcnn", "evaluation_tables", "write_evaluation",
                    "store_evaluation", "evaluate_detections", "confusion_matrix",
                    "evaluation_report", "sep_detect"]),
    ("End to end", ["run_demo", "DemoResult"]),
    ("Errors", ["AstrodaskError", "InputError", "StoreError"]),
]


def public_api():
    """``{public name: "module.attribute"}`` from ``astrodask/__init__.py``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_API"
                                                for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: target.replace(":", ".") for name, target in table.items()}
    raise RuntimeError("astrodask/__init__.py has no _API table: update docs/hooks.py")


def api_markdown():
    """The API reference: one mkdocstrings block per public name."""
    api = public_api()
    listed = set()
    lines = []
    sections = list(API_SECTIONS)
    others = sorted(set(api) - {n for _, names in API_SECTIONS for n in names})
    if others:
        sections.append(("Other", others))
    for title, names in sections:
        names = [n for n in names if n in api]
        if not names:
            continue
        lines += [f"## {title}", ""]
        for name in names:
            listed.add(name)
            lines += [
                f"[](){{#astrodask.{name}}}",  # so `astrodask.NAME` links here too
                f"::: {api[name]}",
                "    options:",
                f'      heading: "astrodask.{name}"',
                f'      toc_label: "{name}"',
                "      heading_level: 3",
                "",
                f"<small>Defined in `{api[name].rsplit('.', 1)[0]}`.</small>",
                "",
            ]
    return "\n".join(lines)


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def cli_markdown():
    """``astrodask --help`` and the help of every (sub)subcommand."""
    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal; fix it for the docs
    from astrodask.cli import build_parser

    parser = build_parser()
    lines = ["## `astrodask`", "", "```text", parser.format_help().rstrip(), "```", ""]

    def walk(prefix, parser):
        for name, sub in sorted(_subparsers(parser).items()):
            command = f"{prefix} {name}"
            lines.extend([f"## `{command}`", "", "```text", sub.format_help().rstrip(), "```",
                          ""])
            walk(command, sub)

    walk("astrodask", parser)
    return "\n".join(lines)


def _number(value):
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def cards_markdown():
    """A summary of each shipped model card, quoting the card's own fields."""
    lines = []
    for path in sorted(CARDS.glob("*.card.json")):
        card = json.loads(path.read_text())
        name = card.get("name", path.name.split(".")[0])
        lines += [f"### `{name}`", ""]
        rows = [
            ("architecture", card.get("architecture")),
            ("bands (input order)", ", ".join(card.get("bands", []))),
            ("filters", ", ".join(card.get("filters", [])) or None),
            ("pixel scale", f'{card["pixel_scale_arcsec"]}"/px'
             if "pixel_scale_arcsec" in card else None),
            ("classes", ", ".join(card.get("classes", []))),
            ("parameters", f'{card["parameters"]:,}' if "parameters" in card else None),
            ("training data", card.get("training_data")
             or (card.get("training", {}).get("data", {}).get("simulator")
                 and "simulated `{}` fields ({} fields of {} px, {}), seeds {}".format(
                     card["training"]["data"].get("preset"),
                     card["training"]["data"].get("n_fields"),
                     card["training"]["data"].get("field_size"),
                     card["training"]["data"].get("simulator"),
                     "–".join(map(str, card["training"]["data"].get("seeds", [])))))),
            ("catalog score cut", card.get("catalog_min_score")),
            ("source", "; ".join(f"{k}: {v}" for k, v in card["source"].items())
             if "source" in card else None),
        ]
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
        lines.append("")
        for key, title in (("summary", "Summary"), ("limitations", "Limitations")):
            if card.get(key):
                lines += [f"**{title}** (from the card): {card[key]}", ""]
        metrics = card.get("metrics", {})
        modes = {k: v for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
        if modes:
            keys = ["accuracy", "accuracy_background", "accuracy_spheroid", "accuracy_disk",
                    "accuracy_irregular", "accuracy_point_source", "iou_0.5", "iou_0.7",
                    "iou_0.9"]
            lines += [f"Held-out metrics ({metrics.get('held_out', 'held-out fields')}):", "",
                      "| mode | " + " | ".join(keys) + " |",
                      "| --- | " + " | ".join("---" for _ in keys) + " |"]
            for mode, values in modes.items():
                lines.append(f"| {mode} | "
                             + " | ".join(_number(values.get(k, "–")) for k in keys) + " |")
            lines.append("")
        check = metrics.get("conversion_check")
        if check:
            lines += ["Conversion check against the original TF1 graph: "
                      + ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in check.items()), ""]
        lines += [f"The whole card: [{path.name}](models/cards/{path.name}).", ""]
    return "\n".join(lines)


def on_files(files, config):
    """Publish the model cards and the repository's long records beside the pages."""
    for path in sorted(CARDS.glob("*.card.json")):
        files.append(File.generated(config, f"models/cards/{path.name}",
                                    content=path.read_bytes()))
    files.append(File.generated(config, "benchmarks-full.md",
                                content=(ROOT / "BENCHMARKS.md").read_text()))
    deploy = (ROOT / "deploy" / "README.md").read_text()
    files.append(File.generated(config, "deploy-readme.md", content=deploy))
    return files


def on_page_markdown(markdown, page, config, files):
    """Fill the generated sections of a page."""
    for marker, make in (("<!-- api-reference -->", api_markdown),
                         ("<!-- cli-reference -->", cli_markdown),
                         ("<!-- model-cards -->", cards_markdown)):
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|obj|exc|const):"
                  r"<code>~?(?P<target>[\w.]+?)(?:\(\))?</code>")


def _role(match):
    target = match.group("target")
    required = re.fullmatch(r"astrodask\.\w+", target) is not None
    flag = "" if required else " optional"
    return f'<autoref identifier="{target}"{flag}><code>{target}</code></autoref>'


def on_page_content(html, page, config, files):
    """Turn Sphinx roles of docstrings into cross-references (see the module docstring)."""
    return ROLE.sub(_role, html)
