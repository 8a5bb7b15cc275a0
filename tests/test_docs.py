"""The documentation: the site builds with no warning, README.md stays a front page,
and every Python example in README.md and docs/ is a script that runs.

Examples are ```` ```python ```` blocks. Each one is checked statically
(it compiles, pyflakes finds no undefined name, code that starts worker
processes sits under ``if __name__ == "__main__":``) and then run as a script
in a fresh process, in one shared folder, README.md (and deploy/README.md) first and then the pages
in the order of the site's navigation (so an example may use the files that
an earlier one wrote, as a reader following the pages would). A block that
cannot run here (a Kubernetes cluster, a SLURM login node, an hour of
training) is preceded by a line ``<!-- example: skip (reason) -->`` and is
only checked statically. deploy/README.md (published in the site) is checked
the same way.
"""

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SKIP = re.compile(r"<!--\s*example:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
#: Calls that start worker processes (or a cluster) and so need the __main__ guard.
NEEDS_GUARD = {"run", "merge", "Client", "LocalCluster", "LocalCUDACluster", "gpu_cluster",
               "demo"}


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1", MPLBACKEND="agg",
               TF_CPP_MIN_LOG_LEVEL="3")
    return env


def doc_pages():
    """README.md, deploy/README.md, then the docs pages in the order of mkdocs.yml's nav."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = []

    def walk(items):
        for item in items:
            value = item if isinstance(item, str) else next(iter(item.values()))
            if isinstance(value, list):
                walk(value)
            elif (DOCS / value).exists():
                pages.append(DOCS / value)

    walk(config["nav"])
    return [README, ROOT / "deploy" / "README.md"] + pages


def examples():
    """``(page, line, code, skip_reason)`` of every Python block, in reading order."""
    found = []
    for page in doc_pages():
        lines = page.read_text().splitlines()
        k = 0
        while k < len(lines):
            if lines[k].strip() == "```python":
                start = k + 1
                end = start
                while lines[end].strip() != "```":
                    end += 1
                before = next((lines[j] for j in range(k - 1, -1, -1) if lines[j].strip()), "")
                skip = SKIP.search(before)
                found.append((page.relative_to(ROOT).as_posix(), start + 1,
                              "\n".join(lines[start:end]) + "\n",
                              skip.group("reason") if skip else None))
                k = end
            k += 1
    return found


def _guarded(tree):
    """Statements of the module body outside ``if __name__ == "__main__":``."""
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            continue
        yield node


def _unguarded_worker_calls(code):
    calls = []
    for node in _guarded(ast.parse(code)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        for sub in ast.walk(node):
            if not isinstance(sub, ast.Call):
                continue
            name = getattr(sub.func, "attr", None) or getattr(sub.func, "id", None)
            workers = [kw for kw in sub.keywords if kw.arg in ("workers", "n_workers")
                       and not (isinstance(kw.value, ast.Constant) and kw.value.value == 1)]
            if name in NEEDS_GUARD or workers:
                calls.append(name)
    return calls


def test_every_page_has_examples_where_expected():
    pages = {page for page, *_ in examples()}
    for page in ("README.md", "deploy/README.md", "docs/getting-started.md", "docs/pipeline.md"):
        assert page in pages


@pytest.mark.parametrize("page,line,code,skip", examples(),
                         ids=[f"{p}:{n}" for p, n, *_ in examples()])
def test_example_is_a_complete_script(page, line, code, skip):
    """Compiles, defines every name it uses, and guards code that starts workers."""
    from pyflakes.api import check
    from pyflakes.reporter import Reporter
    import io

    compile(code, f"{page}:{line}", "exec")
    out, err = io.StringIO(), io.StringIO()
    check(code, f"{page}:{line}", Reporter(out, err))
    problems = [m for m in out.getvalue().splitlines() + err.getvalue().splitlines()
                if "undefined name" in m or "syntax" in m.lower()]
    assert not problems, "\n".join(problems)
    unguarded = _unguarded_worker_calls(code)
    assert not unguarded, (f"{page}:{line}: {unguarded} start worker processes; put them under "
                           'if __name__ == "__main__":')


def _run_page(folder, page_examples):
    """Run one page's examples in order; ``(timings, failures)``."""
    timings, failures = [], []
    for page, line, code in page_examples:
        script = folder / f"example_{Path(page).stem}_{line}.py"
        script.write_text(code)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, script.name], cwd=folder, env=_env(),
                              capture_output=True, text=True, timeout=300)
        timings.append(f"{page}:{line} {time.perf_counter() - start:.1f}s")
        if proc.returncode != 0:
            failures.append(f"{page}:{line} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return timings, failures


def test_examples_run_as_scripts(tmp_path):
    """Every example not marked skip runs as a script, in one shared folder.

    README.md's examples run first (the five-line example writes ``field/``,
    ``mosaic.zarr`` and ``results/``, which later pages use); then each page's
    examples in order, two pages at a time (pages do not share files, except
    what README.md's examples wrote).
    """
    from concurrent.futures import ThreadPoolExecutor

    seen, pages = set(), {}
    for page, line, code, skip in examples():
        if skip or code in seen:
            continue
        seen.add(code)
        pages.setdefault(page, []).append((page, line, code))
    first = pages.pop("README.md", [])
    timings, failures = _run_page(tmp_path, first)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for page_timings, page_failures in pool.map(lambda e: _run_page(tmp_path, e),
                                                    pages.values()):
            timings += page_timings
            failures += page_failures
    print("\n".join(timings))
    assert not failures, "\n\n".join(failures)


def _build(config, site):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config), "--site-dir", str(site)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)


def test_docs_build_without_warnings(tmp_path):
    """``mkdocs build --strict``: any warning (a broken link, a docstring that does not
    parse, an API name that no longer exists) fails."""
    proc = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("ingest", "run", "merge", "read_catalog", "simulate_field", "detect_sources"):
        assert f'id="astrodask.{name}"' in api or f"astrodask.{name}</" in api
    assert (tmp_path / "site" / "models" / "cards" / "maskrcnn_decam.card.json").exists()
    for picture in (DOCS / "gallery").iterdir():
        assert picture.stat().st_size < 500_000, f"{picture.name}: keep gallery pictures small"


@pytest.mark.parametrize("page,error", [
    # a docstring role naming no public name
    ("::: broken_module.broken\n",
     "Could not find cross-reference target 'astrodask.no_such_function'"),
    # a cross-reference in a page
    ("See [the runner][astrodask.no_such_function].\n",
     "Could not find cross-reference target 'astrodask.no_such_function'"),
    # an API entry whose function moved away
    ("::: astrodask.no_such_module.no_such_function\n",
     "Could not collect 'astrodask.no_such_module.no_such_function'"),
    # the control: the same set-up with a docstring naming a public function builds
    ("::: broken_module.fine\n", None),
])
def test_broken_reference_fails_the_build(tmp_path, page, error):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(page)
    (docs / "api.md").write_text((DOCS / "api.md").read_text())  # where astrodask.NAME resolve
    (tmp_path / "broken_module.py").write_text(
        'def broken():\n    """Calls :func:`astrodask.no_such_function`."""\n\n\n'
        'def fine():\n    """Calls :func:`astrodask.ingest`."""\n')
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(docs), nav=["index.md", "api.md"], hooks=[str(DOCS / "hooks.py")],
                  exclude_docs="", validation={}, theme={"name": "mkdocs"})
    mkdocstrings = next(p["mkdocstrings"] for p in config["plugins"]
                        if isinstance(p, dict) and "mkdocstrings" in p)
    mkdocstrings["handlers"]["python"]["paths"] = [str(ROOT), str(tmp_path)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    if error is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode != 0
        assert error in proc.stdout + proc.stderr


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.encode()) < 12 * 1024, f"README.md is {len(text.encode())} bytes"
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")
    assert text.index("make demo") < text.index("```python")
    assert re.search(r"Burke, .*? 2019, MNRAS 490, 3952", text, flags=re.S)
    assert re.search(r"Hausen, .*? 2020, ApJS 248, 20", text, flags=re.S)
    assert "trained on simulations only" in text.lower() or "trained on simulated" in text.lower()
    for jargon in ("the issue", "no GPU lent", "2-core CPU", "session"):
        assert jargon not in text, jargon
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link
