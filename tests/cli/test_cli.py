"""`keras-cae train` end to end, and its one-line errors."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from keras_cae.cli import main
from tests import ROOT


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow  # 33 s on a loaded 2-core machine (--durations).
def test_train_on_digits_writes_a_loadable_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "train", "--out", str(out), "--epochs", "2", "--hidden-units", "16", "--quiet"
    )
    assert code == 0
    assert sorted(os.listdir(out)) == ["held_out.npy", "metrics.json", "model.keras"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "sklearn-digits"
    assert metrics["num_train"] + metrics["num_test"] == 1797
    assert metrics["config"]["penalty_method"] == "closed_form"
    assert len(metrics["history"]["loss"]) == 2
    for key in ("probe_accuracy_codes", "probe_accuracy_raw"):
        assert 0.1 < metrics[key] <= 1.0
    assert "held-out reconstruction MSE" in stdout and "probe accuracy" in stdout
    model = keras.models.load_model(out / "model.keras")
    assert model.encoder.output_shape == (None, 16)
    # The summary's figures are the model's: recompute the held-out MSE independently.
    from keras_cae.data import load_digits
    from keras_cae.training import split

    _, x_test, _, _ = split(load_digits(), 0.2, 0)
    mse = float(np.mean((np.asarray(model.predict(x_test, verbose=0)) - x_test) ** 2))
    np.testing.assert_allclose(metrics["test_reconstruction_mse"], mse, rtol=1e-5)
    # The rows `keras-cae export` checks parity on: the first held-out rows.
    np.testing.assert_array_equal(np.load(out / "held_out.npy"), x_test[:64])


def test_train_on_user_csv_without_labels(tmp_path, capsys, rng):
    path = tmp_path / "x.csv"
    np.savetxt(path, rng.random((40, 6)), delimiter=",", header="a,b,c,d,e,f", comments="")
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "train", "--data", str(path), "--out", str(out), "--epochs", "1", "--quiet"
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input_dim"] == 6 and "probe_accuracy_codes" not in metrics


@pytest.mark.parametrize(
    "make, argv_extra, message",
    [
        (None, ["--data", "missing.npy"], "no such file"),
        ("text.csv", [], "row 2, column 2 is not a number: 'abc'"),
        ("bad.txt", [], "Supported suffixes are"),
        ("nan.npy", [], "NaN or infinite values in 1 of 5 rows"),
        (None, ["--epochs", "0"], "expected a positive integer"),
        (None, ["--contractive-weight", "-1"], "non-negative"),
        (None, ["--penalty", "exact"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, make, argv_extra, message):
    argv = ["train", "--out", str(tmp_path / "out"), "--epochs", "1", "--quiet"]
    if make is not None:
        path = tmp_path / make
        if make.endswith(".csv"):
            path.write_text("1,2,3\n4,abc,6\n")
        elif make.endswith(".npy"):
            data = np.ones((5, 3))
            data[2, 1] = np.nan
            np.save(path, data)
        else:
            path.write_text("1 2 3\n")
        argv += ["--data", str(path)]
    argv += [a if a != "missing.npy" else str(tmp_path / a) for a in argv_extra]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # 46 s on a loaded 2-core machine (--durations).
def test_existing_output_is_never_overwritten_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, stderr = run(capsys, "train", "--out", str(out), "--epochs", "1", "--quiet")
    assert code == 2 and "--overwrite" in stderr and stderr.count("\n") == 1
    assert (out / "keep.txt").read_text() == "precious"
    code, _, _ = run(
        capsys,
        "train",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--hidden-units",
        "4",
        "--quiet",
        "--overwrite",
    )
    assert code == 0
    assert sorted(os.listdir(out)) == ["held_out.npy", "metrics.json", "model.keras"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # No staging left.


def test_unknown_subcommand_is_one_line(capsys):
    code, _, stderr = run(capsys, "fly")
    assert code == 2 and stderr.count("\n") == 1 and "invalid choice" in stderr


# ------------------------------------------------------------------------------------------
# One error form for every command, checked before any work.


def _fresh_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Runs `code` in a new interpreter, as a user's shell would (no test log settings)."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**environment, **env},
    )


def _main_without_tensorflow(argvs: list[list[str]]) -> tuple[list[int], list[str]]:
    """Runs `main` on each argv in one fresh process; asserts TensorFlow was not imported."""
    result = _fresh_python(
        "import sys\n"
        "from keras_cae.cli import main\n"
        f"codes = [main(argv) for argv in {argvs!r}]\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "print(codes)\n"
    )
    assert result.returncode == 0, result.stderr
    # `train` announces its phases on stdout ("loading ..."); the codes come last.
    return json.loads(result.stdout.splitlines()[-1]), result.stderr.splitlines()


def _zip(path) -> str:
    """A zip file that is no Keras archive (no config.json)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return str(path)


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["fly"], "keras-cae"),
        (["train", "--epochs", "0"], "keras-cae train"),
        (["export", "missing.keras", "--out", "o"], "keras-cae export"),
        (["encode", "e.onnx", "x.npy", "--out", "codes.txt"], "keras-cae encode"),
        (["serve", "missing.onnx", "--port", "70000"], "keras-cae serve"),
        (["compare", "--seeds", "0"], "keras-cae compare"),
        (["compare", "--test-fraction", "0"], "keras-cae compare"),
    ],
)
def test_every_error_reads_prog_colon_error(argv, prog, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(capsys, *argv)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"{prog}: error: "), stderr
    assert f"{prog}: error: {prog}" not in stderr  # No doubled prefix.


def test_overwrite_hint_uses_the_cli_spelling(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    for argv in (["train"], ["compare"], ["export", _zip(tmp_path / "m.keras")]):
        code, _, stderr = run(capsys, *argv, "--out", str(tmp_path / "out"))
        assert code == 2 and "pass --overwrite" in stderr and "overwrite=True" not in stderr


# Holds the lock on argv[1], the lock a running `keras-cae export` or `encode` takes
# on its --out, says so, and waits to be killed.
_LOCK_HOLDER = """
import sys, time
from keras_cae import _lock
with _lock.output_lock(sys.argv[1], "--out"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_export_into_one_out_fails_at_once_in_the_cli_spelling(tmp_path):
    """The loser of two exports into one --out fails before it imports TensorFlow,
    and says so with the CLI's words, not `out` ... overwrite=True."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        codes, lines = _main_without_tensorflow(
            [["export", _zip(tmp_path / "m.keras"), "--out", str(out)]]
        )
    finally:
        holder.kill()
        holder.wait()
    assert codes == [2] and len(lines) == 1, lines
    assert lines[0].startswith(
        f"keras-cae export: error: --out '{out}' is being written by another keras-cae run "
        f"(process {holder.pid})"
    ), lines
    assert "overwrite=True" not in lines[0] and "`out`" not in lines[0]


# Overwrites the directory argv[1] with `atomic_directory` and is killed between moving
# the old directory aside and renaming the new one into place.
_KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from keras_cae import _io
real = os.rename
def rename(src, dst):
    if os.path.basename(str(src)).startswith("." + os.path.basename(sys.argv[1]) + ".tmp-"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.rename = rename
with _io.atomic_directory(sys.argv[1], overwrite=True) as staging:
    open(os.path.join(staging, "new.onnx"), "w").close()
"""


def test_an_output_moved_aside_by_a_killed_overwrite_is_put_back(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.onnx").write_text("the previous export")
    killed = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(out)])
    assert killed.returncode == -9 and not out.exists()
    (moved,) = [name for name in os.listdir(tmp_path) if name.startswith(".out.old-")]
    # The next run puts it back before its checks: without --overwrite it is refused.
    codes, lines = _main_without_tensorflow(
        [["export", _zip(tmp_path / "m.keras"), "--out", str(out)]]
    )
    assert codes == [2] and lines[0].startswith(f"Restored {out} from {moved}"), lines
    assert lines[1].startswith("keras-cae export: error: `--out`") and "--overwrite" in lines[1]
    assert (out / "old.onnx").read_text() == "the previous export"
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "out"]  # The new staging is gone too.


UNWRITABLE = {
    "under a file": ("{tmp}/a-file/target", "is a file, not a directory"),
    "read-only": ("/sys/keras-cae-test/target", "cannot write in '/sys'"),
}


@pytest.mark.parametrize("where", UNWRITABLE)
def test_unwritable_out_fails_first_in_one_line_without_tensorflow(where, tmp_path):
    (tmp_path / "a-file").write_text("")
    out, words = UNWRITABLE[where]
    out = out.format(tmp=tmp_path)
    model = _zip(tmp_path / "m.keras")
    commands = [
        ["train", "--out", out],
        ["compare", "--out", out],
        ["export", model, "--out", out],
        ["encode", "e.onnx", "x.npy", "--out", out + ".npy"],
    ]
    codes, lines = _main_without_tensorflow(commands)
    assert codes == [2, 2, 2, 2] and len(lines) == 4, lines
    for line, command in zip(lines, ("train", "compare", "export", "encode")):
        assert line.startswith(f"keras-cae {command}: error: `--out`") and words in line, line


# ------------------------------------------------------------------------------------------
# Messages a user can act on.


@pytest.mark.parametrize(
    "name, words",
    [
        ("fake.keras", "is not a Keras archive"),  # A .npy file renamed.
        ("metrics.json", "is not a Keras archive"),
        ("run", "is a directory without model.keras"),
    ],
)
def test_export_says_what_the_model_path_is(name, words, tmp_path, capsys):
    path = tmp_path / name
    if name == "run":
        path.mkdir()
    elif name == "metrics.json":
        path.write_text("{}")
    else:
        with open(path, "wb") as stream:
            np.save(stream, np.ones(3))
    code, _, stderr = run(capsys, "export", str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{str(path)!r} {words}" in stderr and "not found" not in stderr


def test_export_reads_a_run_directory_as_its_model_keras(tmp_path):
    from keras_cae.cli.export import resolve_model_path

    model = _zip(tmp_path / "model.keras")
    assert resolve_model_path(str(tmp_path)) == model
    assert resolve_model_path(model) == model


def test_keras_load_errors_are_printed_whole(tmp_path, capsys):
    path = _zip(tmp_path / "model.zip")
    with pytest.raises(Exception) as raised:
        keras.models.load_model(path)
    whole = " ".join(str(raised.value).split())
    assert len(whole) > 300  # Long enough to have been cut before.
    code, _, stderr = run(capsys, "export", path, "--out", str(tmp_path / "o"))
    assert code == 2
    assert stderr.rstrip("\n").endswith(f"{type(raised.value).__name__}: {whole}"), stderr


def test_too_few_rows_fail_before_tensorflow_naming_the_flag(tmp_path):
    for rows in (1, 2):
        np.save(tmp_path / f"rows{rows}.npy", np.random.default_rng(rows).random((rows, 4)))
    argv = [
        ["train", "--data", str(tmp_path / "rows1.npy"), "--out", str(tmp_path / "a")],
        ["train", "--data", str(tmp_path / "rows2.npy"), "--out", str(tmp_path / "b")],
        ["compare", "--data", str(tmp_path / "rows2.npy"), "--out", str(tmp_path / "c")],
    ]
    codes, (one, two, compare) = _main_without_tensorflow(argv)
    assert codes == [2, 2, 2]
    assert "has 1 row: --test-fraction 0.2 leaves no training rows" in one
    assert "give more rows or change --test-fraction" in one
    assert "--validation-split 0.1 of the remaining 1 leaves no training rows" in two
    assert "give more rows or change --validation-split" in two
    assert "the validation search 0.2 of the remaining 1 leaves no training rows" in compare


def test_row_counts_match_what_scikit_learn_and_keras_split():
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split
    from sklearn.model_selection import train_test_split

    from keras_cae.cli.sizes import held_out_split

    for rows in range(2, 40):
        for fraction in (0.05, 0.1, 0.2, 0.33, 0.5, 0.9):
            try:
                kept, held = train_test_split(np.arange(rows), test_size=fraction, random_state=0)
            except ValueError:  # scikit-learn refuses an empty part: so must we.
                assert 0 in held_out_split(rows, fraction, "ceil"), (rows, fraction)
            else:
                assert held_out_split(rows, fraction, "ceil") == (len(kept), len(held))
            try:
                (kept, _), (held, _) = train_validation_split((np.arange(rows), None), fraction)
            except ValueError:  # Keras refuses an empty part: so must we.
                assert 0 in held_out_split(rows, fraction, "floor"), (rows, fraction)
                continue
            assert held_out_split(rows, fraction, "floor") == (len(kept), len(held))


# ------------------------------------------------------------------------------------------
# The front door: --version, --help, README.


def test_version_and_help_list_the_subcommands(capsys):
    import keras_cae

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"keras-cae {keras_cae.__version__}\n"
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for command in ("train", "export", "encode", "serve", "compare"):
        assert re.search(rf"^ +{command} +\S", listed, re.MULTILINE), listed


@pytest.mark.slow  # 36 s on a loaded 2-core machine (--durations).
def test_readme_creates_the_file_it_encodes(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        commands = [line[2:] for line in stream if line.startswith("$ ")]
    encode = next(c for c in commands if c.startswith("keras-cae encode"))
    source = encode.split()[3]
    makers = [c for c in commands[: commands.index(encode)] if source in c]
    assert makers, f"no README command before {encode!r} creates {source}"
    for command in makers:
        program, *arguments = shlex.split(command)
        assert program == "python", command  # Run with this interpreter, not the PATH's.
        subprocess.run([sys.executable, *arguments], check=True, cwd=tmp_path, timeout=120)
    from keras_cae.data import load_digits

    np.testing.assert_array_equal(np.load(tmp_path / source), load_digits().x)


# ------------------------------------------------------------------------------------------
# TensorFlow's own log lines, seen on the real stderr of a fresh process.


def test_a_failed_tensorflow_import_is_one_line_that_points_at_verbose(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 4)))
    argv = ["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "run")]
    result = _fresh_python(  # `import tensorflow` fails, as in a broken installation.
        f"import sys; sys.modules['tensorflow'] = None\n"
        f"from keras_cae.cli import main; sys.exit(main({argv!r}))"
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("keras-cae train: error: cannot import TensorFlow")
    assert "--verbose shows its log" in result.stderr


def test_a_missing_training_package_is_one_line_that_names_the_install(tmp_path):
    # As in the service install (requirements-service.txt): no scikit-learn.
    argv = ["train", "--out", str(tmp_path / "run")]
    result = _fresh_python(
        "import sys; sys.modules['sklearn'] = None\n"
        f"from keras_cae.cli import main; sys.exit(main({argv!r}))"
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("keras-cae train: error: this command needs the module")
    assert "'sklearn'," in result.stderr and "pip install keras-cae" in result.stderr
    assert not (tmp_path / "run").exists()


def test_export_without_tensorflow_installed_names_the_install(tmp_path):
    """As in the service install: Keras and TensorFlow are not installed at all (the
    path finder cannot find them), so `export` says which install has them, as `train`
    does, instead of a failed TensorFlow import."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    argv = ["export", str(tmp_path / "model.keras"), "--out", str(tmp_path / "exported")]
    result = _fresh_python(
        "import importlib.machinery as machinery, sys\n"
        "find = machinery.PathFinder.find_spec\n"
        "def hide(name, path=None, target=None):\n"
        "    top = name.partition('.')[0]\n"
        "    return None if top in ('keras', 'tensorflow') else find(name, path, target)\n"
        "machinery.PathFinder.find_spec = hide\n"
        f"from keras_cae.cli import main; sys.exit(main({argv!r}))"
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("keras-cae export: error: this command needs the module")
    assert "'keras'," in result.stderr and "pip install keras-cae" in result.stderr
    assert "cannot import TensorFlow" not in result.stderr
    assert not (tmp_path / "exported").exists()


@pytest.mark.slow
def test_tensorflow_logs_are_silent_unless_verbose(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 4)))
    train = ["train", "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--quiet"]
    bad = _zip(tmp_path / "bad.keras")
    cli = "import sys; from keras_cae.cli import main; sys.exit(main({!r}))"
    trained = _fresh_python(cli.format([*train, "--out", str(tmp_path / "run")]))
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr
    failed = _fresh_python(cli.format(["export", bad, "--out", str(tmp_path / "o")]))
    assert failed.returncode == 2
    assert failed.stderr.startswith("keras-cae export: error: cannot load")
    assert failed.stderr.count("\n") == 1, failed.stderr
    # The control: the same commands with --verbose do print TensorFlow's lines.
    verbose = _fresh_python(cli.format([*train, "--out", str(tmp_path / "v"), "--verbose"]))
    assert verbose.returncode == 0 and verbose.stderr.count("\n") > 1, verbose.stderr


def test_unscaled_pixels_are_refused_with_the_fix(tmp_path, capsys):
    path = tmp_path / "pixels.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8))
    code, _, stderr = run(
        capsys, "train", "--data", str(path), "--out", str(tmp_path / "out"), "--quiet"
    )
    assert code == 2
    assert "divide by 255" in stderr and "'sigmoid'" in stderr and "[0, 255]" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def _onnx_encoder(path, input_dims: list[int]) -> None:
    """A TensorFlow-free encoder: code = x summed over its last axis (flattened first
    for a flat input of 12 as a (3, 4) sum)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Reshape", ["x", "shape"], ["grid"])]
    nodes.append(helper.make_node("ReduceSum", ["grid", "axes"], ["code"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *input_dims])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(np.array([-1, 3, 4], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_train_and_encode_share_one_data_contract(tmp_path, capsys):
    images = np.random.default_rng(1).random((40, 3, 4)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "flat.npy", images.reshape(40, 12))
    # train: a flat Dense model, so each (3, 4) image is flattened to 12 inputs.
    out = tmp_path / "run"
    code, _, stderr = run(
        capsys, "train", "--data", str(tmp_path / "images.npy"), "--out", str(out),
        "--epochs", "1", "--hidden-units", "3", "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads((out / "metrics.json").read_text())["input_dim"] == 12
    # encode: the same file into a flat encoder (flattened) and an image encoder (as is).
    expected = images.sum(axis=2)
    for dims in ([12], [3, 4]):
        model = tmp_path / f"encoder{len(dims)}.onnx"
        _onnx_encoder(str(model), dims)
        codes = tmp_path / f"codes{len(dims)}.npy"
        argv = ["encode", str(model), str(tmp_path / "images.npy"), "--out", str(codes)]
        code, _, stderr = run(capsys, *argv)
        assert code == 0, stderr
        np.testing.assert_allclose(np.load(codes), expected, rtol=1e-6)
    # Flat rows do not become images: refused, one line, exit 2.
    argv = ["encode", str(tmp_path / "encoder2.onnx"), str(tmp_path / "flat.npy")]
    code, _, stderr = run(capsys, *argv, "--out", str(tmp_path / "bad.npy"))
    assert code == 2 and "shape (3, 4)" in stderr and "(40, 12)" in stderr
    assert stderr.count("\n") == 1 and not (tmp_path / "bad.npy").exists()
