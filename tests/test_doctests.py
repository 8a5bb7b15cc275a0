"""The examples in the docstrings of the main public functions run, in order, on tiny inputs.

They form one walk through the pipeline (simulate_field; ingest writes
``mosaic.zarr``, open_mosaic reads it, run and merge write ``results/``,
read_catalog reads the catalog), so they run in that order in one folder.
"""

import doctest

import pytest

import astrodask

#: Public names whose docstrings must carry examples, in the order they run.
WITH_EXAMPLES = ["simulate_field", "ingest", "open_mosaic", "run", "merge", "read_catalog",
                 "resolve_config", "model_card"]


def _examples(name):
    tests = doctest.DocTestFinder(recurse=False).find(getattr(astrodask, name), name, globs={})
    return [t for t in tests if t.examples]


def test_main_functions_have_examples():
    missing = [name for name in WITH_EXAMPLES if not _examples(name)]
    assert not missing, f"no docstring examples: {missing}"


def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for name in WITH_EXAMPLES:
        for test in _examples(name):
            runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_a_wrong_example_fails(tmp_path):
    """The runner above does catch a wrong output (the check can fail)."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "planted", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda _: None)
    assert runner.failures == 1


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_examples_are_in_the_public_api(name):
    assert name in astrodask._API
