"""deploy/README.md stays true to the files and the command lines it documents."""

import importlib.util
from pathlib import Path
import re
import shlex

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "deploy" / "README.md"


def shell_commands():
    """Each command of the README's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words:
                commands.append(words)
    return commands


def test_paths_named_in_the_readme_exist():
    named = set(re.findall(r"deploy/[\w./-]+\w", README.read_text()))
    assert named
    for path in named:
        assert (ROOT / path).exists(), path


def test_astrodask_command_lines_parse():
    from astrodask.cli import build_parser

    parser = build_parser()
    seen = set()
    for words in shell_commands():
        if words[0] == "docker" and words[1] == "run":
            image = next(i for i, w in enumerate(words) if w.startswith("astrodask:"))
            rest = words[image + 1:]
            if rest[0] != "dask":  # the image's entrypoint hands these to astrodask
                seen.add(parser.parse_args(rest).command)
        elif words[:2] == ["kubectl", "exec"] and "--" in words:
            command = words[words.index("--") + 1:]
            if command[0] == "astrodask":
                seen.add(parser.parse_args(command[1:]).command)
        elif words[0] == "srun":
            program = next(i for i, w in enumerate(words) if w.endswith("/astrodask"))
            seen.add(parser.parse_args(words[program + 1:]).command)
        elif words[0] == "sbatch":
            script = next(i for i, w in enumerate(words) if w.endswith("astrodask.sbatch"))
            mosaic, out, *options = words[script + 1:]
            seen.add(parser.parse_args(["run", mosaic, "--out", out, *options]).command)
    assert seen == {"run", "simulate", "merge"}  # the walkthroughs end with a catalog


def test_slurm_cluster_command_lines_parse():
    spec = importlib.util.spec_from_file_location("slurm_cluster",
                                                  ROOT / "deploy" / "slurm" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = [w for w in shell_commands() if w[:2] == ["python", "deploy/slurm/slurm_cluster.py"]]
    assert len(lines) == 2
    for words in lines:
        args = module._parser().parse_args(words[2:])
        assert args.print_job_script or (args.mosaic and args.out)


def test_applied_manifests_exist():
    applied = [w for words in shell_commands() if words[:2] in (["kubectl", "apply"],
                                                                ["kubectl", "delete"])
               for flag, w in zip(words, words[1:]) if flag == "-f"]
    assert applied
    for path in applied:
        assert (ROOT / path).is_file(), path
