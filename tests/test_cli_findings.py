"""What a new user met on the command line: band maps, typos, log noise, options."""

import subprocess
import sys
from pathlib import Path

import pytest

from astrodask import InputError, resolve_config
from astrodask import cli
from astrodask.engine.specs import resolve_models

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_band_map_to_a_missing_band_names_it():
    with pytest.raises(InputError) as info:
        resolve_models(["unet"], ["g", "r", "z"], {"g": "q"})
    message = str(info.value)
    assert "g=q" in message and "does not have" in message and "g,r,z" in message
    assert "no shipped" not in message  # not "no model takes g,r,z (shipped: ... (g,r,z))"


@pytest.mark.parametrize("text", ["H=", "=f160w", "H=f160w,J= "])
def test_band_map_pair_with_an_empty_side_is_an_error(text):
    with pytest.raises(InputError, match="needs a model band and a mosaic band"):
        resolve_config(band_map=text)


def test_band_map_text_and_dict_agree():
    assert resolve_config(band_map="H=f160w, J=f125w").band_map == {"H": "f160w",
                                                                    "J": "f125w"}
    with pytest.raises(InputError, match="needs a model band"):
        resolve_config(band_map={"H": ""})


def test_cli_empty_band_map_target_exits_2(tmp_path, capsys):
    code = cli.main(["run", str(tmp_path / "m.zarr"), "--out", str(tmp_path / "r"),
                     "--band-map", "H="])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "H=" in err


@pytest.mark.parametrize("argv, suggestion", [(["rnu"], "'run'"), (["ingets"], "'ingest'"),
                                              (["train", "unte"], "'unet'")])
def test_mistyped_subcommand_gets_did_you_mean(argv, suggestion, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert f"did you mean {suggestion}?" in capsys.readouterr().err


def test_run_options_for_unet_outputs_and_detection_cap():
    args = cli.build_parser().parse_args(["run", "m.zarr", "--out", "r", "--unet-outputs",
                                          "mean,var,votes", "--max-detections", "300"])
    config = args.func.__globals__["config_from_args"](args)
    assert config.unet.outputs == ["mean", "var", "votes"]
    assert config.maskrcnn.max_detections == 300
    pipeline = (DOCS / "pipeline.md").read_text()
    for text in ("--unet-outputs mean,var,votes", "--max-detections N", "`--quiet`"):
        assert text in pipeline


@pytest.mark.parametrize("argv", [["train", "maskrcnn", "run"], ["train", "unet", "--out", "x"],
                                  ["evaluate"], ["models", "import-morpheus"]])
def test_framework_commands_drop_native_logs(argv):
    assert cli.build_parser().parse_args(argv).quiet_native_logs is True


NOISY = r"""
import os, sys
from astrodask.framework import quiet_native_logs

with quiet_native_logs():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796068170.908625   11352 cudart_stub.cc:31] Could not find cuda drivers\n")
    os.write(2, b"E0000 00:00:1796068189.057685   11384 cuda_platform.cc:52] failed call to cuInit\n")
    print("a line of ours", file=sys.stderr)
    if sys.argv[1] == "tf":
        import keras
        keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)
print("after", file=sys.stderr)
"""


@pytest.mark.parametrize("mode", ["plain", "tf"])
def test_quiet_native_logs_keeps_our_lines_only(mode):
    done = subprocess.run([sys.executable, "-c", NOISY, mode], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ,
                                            "TF_CPP_MIN_LOG_LEVEL": ""})
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a line of ours\nafter\n"


def test_the_run_path_imports_keras_without_native_notices():
    # astrodask run / demo read the Mask R-CNN's detection settings in the client,
    # which imports Keras (and TensorFlow) there: its C++ notices must not reach stderr
    code = ("from astrodask.engine.specs import detection_settings\n"
            "assert detection_settings({})['detection_nms_threshold'] > 0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ,
                                            "TF_CPP_MIN_LOG_LEVEL": ""})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
