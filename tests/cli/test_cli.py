"""The `keras-cae` command line as a whole: the front door (--version, --help, the
README's commands), the one error form every command shares (``keras-cae <command>:
error: <message>``, exit code 2, checked before any work), the `--out` every command
writes (refused when taken, locked, restored after a killed overwrite), and TensorFlow's
own log lines. Each command's own behaviour: `test_train.py`, `test_train_data.py`,
`test_export_encode.py`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from keras_cae.cli import main
from tests import ROOT
from tests._cli import fresh_python, main_without_tensorflow, not_a_keras_archive, run

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


def test_unknown_subcommand_is_one_line(capsys):
    code, _, stderr = run(capsys, "fly")
    assert code == 2 and stderr.count("\n") == 1 and "invalid choice" in stderr


# ------------------------------------------------------------------------------------------
# One error form for every command, checked before any work.


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
    for argv in (["train"], ["compare"], ["export", not_a_keras_archive(tmp_path / "m.keras")]):
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
        codes, lines = main_without_tensorflow(
            [["export", not_a_keras_archive(tmp_path / "m.keras"), "--out", str(out)]]
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
    codes, lines = main_without_tensorflow(
        [["export", not_a_keras_archive(tmp_path / "m.keras"), "--out", str(out)]]
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
    model = not_a_keras_archive(tmp_path / "m.keras")
    commands = [
        ["train", "--out", out],
        ["compare", "--out", out],
        ["export", model, "--out", out],
        ["encode", "e.onnx", "x.npy", "--out", out + ".npy"],
    ]
    codes, lines = main_without_tensorflow(commands)
    assert codes == [2, 2, 2, 2] and len(lines) == 4, lines
    for line, command in zip(lines, ("train", "compare", "export", "encode")):
        assert line.startswith(f"keras-cae {command}: error: `--out`") and words in line, line


# ------------------------------------------------------------------------------------------
# TensorFlow's own log lines, seen on the real stderr of a fresh process.


def test_a_failed_tensorflow_import_is_one_line_that_points_at_verbose(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 4)))
    argv = ["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "run")]
    result = fresh_python(  # `import tensorflow` fails, as in a broken installation.
        f"import sys; sys.modules['tensorflow'] = None\n"
        f"from keras_cae.cli import main; sys.exit(main({argv!r}))"
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("keras-cae train: error: cannot import TensorFlow")
    assert "--verbose shows its log" in result.stderr


def test_a_missing_training_package_is_one_line_that_names_the_install(tmp_path):
    # As in the service install (requirements-service.txt): no scikit-learn.
    argv = ["train", "--out", str(tmp_path / "run")]
    result = fresh_python(
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
    result = fresh_python(
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
    bad = not_a_keras_archive(tmp_path / "bad.keras")
    cli = "import sys; from keras_cae.cli import main; sys.exit(main({!r}))"
    trained = fresh_python(cli.format([*train, "--out", str(tmp_path / "run")]))
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr
    failed = fresh_python(cli.format(["export", bad, "--out", str(tmp_path / "o")]))
    assert failed.returncode == 2
    assert failed.stderr.startswith("keras-cae export: error: cannot load")
    assert failed.stderr.count("\n") == 1, failed.stderr
    # The control: the same commands with --verbose do print TensorFlow's lines.
    verbose = fresh_python(cli.format([*train, "--out", str(tmp_path / "v"), "--verbose"]))
    assert verbose.returncode == 0 and verbose.stderr.count("\n") > 1, verbose.stderr
