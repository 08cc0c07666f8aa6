"""`keras_cae.export.sharded` and `keras-cae encode` on shards: codes, manifest, resume, refusals.

Encoders are small ONNX graphs built with `onnx.helper` (no TensorFlow); codes are
compared bit for bit with `OnnxEncoder.encode` on the same rows held in memory, and
to a float64 numpy reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_cae import cli
from keras_cae.export.runtime import OnnxEncoder
from keras_cae.export.sharded import MANIFEST, encode_shards
from tests._cli import one_line_error
from tests._onnx import dense_sigmoid_model, reference

FEATURES, CODE = 6, 3


def _write_shards(folder, sizes, row_shape=(FEATURES,), seed=0) -> np.ndarray:
    """Writes float32 shards `part-<i>.npy` of `sizes` rows; returns all rows in order."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(rows, *row_shape)).astype(np.float32) for rows in sizes]
    for index, part in enumerate(parts):
        np.save(os.path.join(folder, f"part-{index}.npy"), part)
    return np.concatenate(parts)


def _read_codes(out) -> np.ndarray:
    with open(os.path.join(out, MANIFEST)) as stream:
        manifest = json.load(stream)
    return np.concatenate([np.load(os.path.join(out, s["output"])) for s in manifest["shards"]])


def test_codes_and_manifest(tmp_path, model_path, weights) -> None:
    x = _write_shards(tmp_path / "data", [10, 0, 7, 12])
    out = tmp_path / "codes"
    # Blocks of 4 rows: shards are read in several blocks, one with a short tail.
    result = encode_shards(OnnxEncoder(model_path), str(tmp_path / "data"), out, block_rows=4)
    assert (result.num_shards, result.num_encoded, result.num_skipped) == (4, 4, 0)
    assert (result.num_rows, result.code_shape) == (29, (CODE,))
    codes = _read_codes(out)
    np.testing.assert_array_equal(codes, OnnxEncoder(model_path).encode(x))
    np.testing.assert_allclose(codes, reference(x, weights), rtol=1e-5, atol=1e-6)
    manifest = json.loads((out / MANIFEST).read_text())
    with open(model_path, "rb") as stream:
        sha256 = hashlib.sha256(stream.read()).hexdigest()
    assert manifest["complete"] is True and manifest["num_rows"] == 29
    assert manifest["encoder"] == {"path": os.path.abspath(model_path), "sha256": sha256}
    assert [(s["input"], s["output"], s["rows"], s["input_bytes"]) for s in manifest["shards"]] == [
        (
            str(tmp_path / "data" / f"part-{i}.npy"),
            f"part-{i}.npy",
            rows,
            os.path.getsize(tmp_path / "data" / f"part-{i}.npy"),
        )
        for i, rows in enumerate([10, 0, 7, 12])
    ]
    assert sorted(os.listdir(out)) == [MANIFEST] + [f"part-{i}.npy" for i in range(4)]

    # Run again: nothing to do. Then change one shard (same rows): only it is redone.
    again = encode_shards(OnnxEncoder(model_path), str(tmp_path / "data"), out)
    assert (again.num_encoded, again.num_skipped) == (0, 4)
    changed = np.ones((7, FEATURES), np.float32)
    np.save(tmp_path / "data" / "part-2.npy", changed)
    os.utime(tmp_path / "data" / "part-2.npy", ns=(1, 1))  # Another mtime, whatever the clock.
    again = encode_shards(OnnxEncoder(model_path), str(tmp_path / "data"), out)
    assert (again.num_encoded, again.num_skipped) == (1, 3)
    np.testing.assert_array_equal(
        np.load(out / "part-2.npy"), OnnxEncoder(model_path).encode(changed)
    )


def test_image_rows_are_flattened_for_a_flat_encoder(tmp_path, model_path) -> None:
    x = _write_shards(tmp_path / "data", [5, 4], row_shape=(2, 3))
    encode_shards(OnnxEncoder(model_path), str(tmp_path / "data" / "*.npy"), tmp_path / "out")
    expected = OnnxEncoder(model_path).encode(x.reshape(len(x), FEATURES))
    np.testing.assert_array_equal(_read_codes(tmp_path / "out"), expected)


@pytest.mark.slow
def test_tfrecord_shards_give_the_same_codes(tmp_path, model_path) -> None:
    from keras_cae.streaming import write_tfrecord

    x = _write_shards(tmp_path / "npy", [9, 6])
    (tmp_path / "tfr").mkdir()
    for index, part in enumerate(np.split(x, [9])):
        write_tfrecord(tmp_path / "tfr" / f"part-{index}.tfrecord", part)
    encode_shards(OnnxEncoder(model_path), str(tmp_path / "tfr"), tmp_path / "out", block_rows=4)
    np.testing.assert_array_equal(_read_codes(tmp_path / "out"), OnnxEncoder(model_path).encode(x))


def test_cli_on_shards_imports_no_tensorflow(tmp_path, model_path) -> None:
    x = _write_shards(tmp_path / "data", [8, 3])
    out = tmp_path / "codes"
    script = (
        "import sys; from keras_cae.cli import main; "
        f"rc = main(['encode', {model_path!r}, {str(tmp_path / 'data')!r}, '--out', "
        f"{str(out)!r}]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote codes of 11 rows, shape (3,), in 2 shards" in done.stdout
    np.testing.assert_array_equal(_read_codes(out), OnnxEncoder(model_path).encode(x))


@pytest.mark.slow  # 40 s on a loaded 2-core machine (--durations).
def test_killed_run_resumes_to_the_same_codes(tmp_path) -> None:
    """SIGKILL a real `keras-cae encode` once its first codes shard exists; the rerun
    keeps the finished shards, encodes the rest, and matches an uninterrupted run bit
    for bit. The shards are large enough (20 of 2000 x 256, a 256 x 256 encoder on one
    thread) that the run is far from done when the first one appears."""
    rng = np.random.default_rng(5)
    model = str(tmp_path / "wide.onnx")
    dense_sigmoid_model(model, rng.normal(size=(256, 256)) / 16, rng.normal(size=256))
    _write_shards(tmp_path / "data", [2000] * 20, row_shape=(256,))
    command = [sys.executable, "-m", "keras_cae.cli", "encode", model, str(tmp_path / "data")]
    options = ["--threads", "1", "--batch-size", "256"]

    whole = tmp_path / "whole"
    done = subprocess.run([*command, "--out", str(whole), *options], capture_output=True)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "resumed"
    child = subprocess.Popen([*command, "--out", str(out), *options], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "part-0.npy").exists():
        assert child.poll() is None and time.monotonic() < deadline, "no first shard"
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] is False and 1 <= len(finished) < 20, finished

    rerun = subprocess.run([*command, "--out", str(out), *options], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    lines = [line.split()[0] for line in rerun.stdout.splitlines()]
    kept, encoded = lines.count("kept"), lines.count("encoded")
    assert len(manifest["shards"]) <= kept < 20 and encoded == 20 - kept, lines
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole))  # No staging left behind.
    for name in os.listdir(whole):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name

    again = subprocess.run(
        [*command, "--out", str(out), *options, "--overwrite"], capture_output=True, text=True
    )
    lines = [line.split()[0] for line in again.stdout.splitlines()]
    assert again.returncode == 0 and lines.count("encoded") == 20, again.stderr
    np.testing.assert_array_equal(_read_codes(out), _read_codes(whole))


def _refused(capsys, argv, match) -> str:
    assert cli.main(argv) == 2
    err = one_line_error(capsys)
    assert match in err, err
    return err


def test_refusals_are_one_line_and_write_nothing(tmp_path, model_path, capsys) -> None:
    data = tmp_path / "data"
    _write_shards(data, [4, 4])
    out = tmp_path / "codes"

    (tmp_path / "afile").write_text("keep")
    _refused(capsys, ["encode", model_path, str(data), "--out", str(tmp_path / "afile")], "file")
    assert (tmp_path / "afile").read_text() == "keep"

    np.save(data / "part-2.npy", np.ones((3, FEATURES + 1), np.float32))
    _refused(capsys, ["encode", model_path, str(data), "--out", str(out)], "different row shapes")
    assert not out.exists()

    (data / "part-2.npy").write_bytes(b"not a numpy file")
    _refused(
        capsys, ["encode", model_path, str(data), "--out", str(out)], "part-2.npy: cannot read"
    )
    assert not out.exists()

    os.remove(data / "part-2.npy")
    wide = tmp_path / "wide"
    _write_shards(wide, [3], row_shape=(FEATURES + 2,))
    _refused(capsys, ["encode", model_path, str(wide), "--out", str(out)], "do not fit")
    assert not out.exists()

    bad = np.ones((6, FEATURES), np.float32)
    bad[4, 1] = np.nan
    np.save(data / "part-1.npy", bad)
    err = _refused(capsys, ["encode", model_path, str(data), "--out", str(out)], "part-1.npy")
    assert "row 4 contains NaN" in err
    # The shard before it is whole and recorded; nothing of the bad one was written.
    assert sorted(os.listdir(out)) == [MANIFEST, "part-0.npy"]
    assert json.loads((out / MANIFEST).read_text())["complete"] is False

    other = tmp_path / "other.onnx"
    dense_sigmoid_model(str(other), np.ones((FEATURES, CODE)), np.zeros(CODE))
    _refused(capsys, ["encode", str(other), str(data), "--out", str(out)], "another encoder")

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    _refused(capsys, ["encode", model_path, str(data), "--out", str(stranger)], "--overwrite")
    assert os.listdir(stranger) == ["notes.txt"]

    _refused(capsys, ["encode", model_path, str(data), "--out", str(data)], "holds the input")


# --------------------------------------------------------------------------------------
# One run per --out, damaged codes, a killed first manifest, a full disk: each driven
# through the real `keras-cae encode` in its own process.

# Runs `keras-cae encode` after a patch given in argv[1] (Python source), on argv[2:].
_PATCHED_CLI = """
import sys
exec(sys.argv[1])
from keras_cae.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _encode(*argv, patch: str = "", **kwargs) -> subprocess.CompletedProcess:
    """`keras-cae encode ARGV` in a new process, optionally after `patch`."""
    command = [sys.executable, "-c", _PATCHED_CLI, patch, "encode", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def _verbs(stdout: str) -> list[str]:
    """`kept` or `encoded`, one per shard line of the output."""
    verbs = [line.split()[0] for line in stdout.splitlines()]
    return [verb for verb in verbs if verb in ("kept", "encoded")]


def _one_line(stderr: str) -> str:
    assert len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


# Pauses `keras-cae encode` at its first block, once --out is locked, and says so.
_PAUSE = """
import time
from keras_cae.export import runtime
def paused(self, x):
    print("encoding", flush=True)
    time.sleep(600)
runtime.OnnxEncoder.encode = paused
"""


@pytest.mark.slow  # 26 s on a loaded 2-core machine (--durations).
def test_a_second_encode_into_one_out_is_refused_until_the_first_dies(tmp_path, model_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _write_shards(first, [5] * 6, seed=1)
    x = _write_shards(second, [5] * 6, seed=2)
    out = tmp_path / "codes"
    command = [sys.executable, "-c", _PATCHED_CLI, _PAUSE, "encode", model_path, str(first)]
    holder = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "encoding"  # --out is locked by now.
        for data in (second, first):  # Another input, or the same: both refused at once.
            started = time.monotonic()
            refused = _encode(model_path, data, "--out", out)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            line = _one_line(refused.stderr)
            assert line.startswith(f"keras-cae encode: error: --out '{out}' is being written"), line
            assert f"(process {holder.pid})" in line and time.monotonic() - started < 30, line
            assert refused.stdout == ""
        with pytest.raises(ValueError, match="being written by another keras-cae run"):
            encode_shards(OnnxEncoder(model_path), str(second), out)  # The library too.
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock.
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    done = _encode(model_path, second, "--out", out, "--overwrite")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(_read_codes(out), OnnxEncoder(model_path).encode(x))
    assert json.loads((out / MANIFEST).read_text())["input"] == str(second)
    assert sorted(os.listdir(tmp_path)) == ["codes", "first", "second"]  # No lock file left.


def _hostile(out) -> None:
    """Damages five of six codes shards in ways a row count does not see."""
    rows = np.load(out / "part-0.npy").shape[0]
    np.save(out / "part-0.npy", np.zeros((rows, CODE)))  # float64, the example.
    with open(out / "part-1.npy", "r+b") as stream:  # Zeroed bytes, header intact.
        stream.seek(4096)
        stream.write(bytes(4096))
    np.save(out / "part-2.npy", np.zeros((rows, CODE), np.float32))  # Right shape and dtype.
    np.save(out / "part-3.npy", np.zeros((rows, CODE + 1), np.float32))  # Another code size.
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"][4].pop("sha256", None)  # As recorded before checksums: not trusted.
    (out / MANIFEST).write_text(json.dumps(manifest))


def test_resume_encodes_damaged_codes_shards_again(tmp_path, model_path):
    data = tmp_path / "data"
    _write_shards(data, [1000] * 6)  # 12,128-byte codes shards: bytes 4096-8191 are rows.
    whole, out = tmp_path / "whole", tmp_path / "out"
    for target in (whole, out):  # In this process: the reference, and what is damaged.
        encode_shards(OnnxEncoder(model_path), str(data), target)
    _hostile(out)
    rerun = _encode(model_path, data, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert _verbs(rerun.stdout) == ["encoded"] * 5 + ["kept"]
    for name in os.listdir(whole):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    manifest = json.loads((out / MANIFEST).read_text())
    assert [s["sha256"] for s in manifest["shards"]] == [
        hashlib.sha256((out / s["output"]).read_bytes()).hexdigest() for s in manifest["shards"]
    ]


def test_a_run_killed_in_its_first_manifest_write_is_resumed(tmp_path, model_path):
    """SIGKILL between writing the first manifest's staging file and renaming it: --out
    holds only that staging file, which the rerun removes before reading the manifest."""
    data = tmp_path / "data"
    _write_shards(data, [7, 5])
    whole, out = tmp_path / "whole", tmp_path / "out"
    encode_shards(OnnxEncoder(model_path), str(data), whole)  # The reference.
    kill_at_manifest = (
        "import os, signal\n"
        "real = os.replace\n"
        "def replace(src, dst, *args, **kwargs):\n"
        "    if str(dst).endswith('manifest.json'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, *args, **kwargs)\n"
        "os.replace = replace\n"
    )
    killed = _encode(model_path, data, "--out", out, patch=kill_at_manifest)
    assert killed.returncode == -signal.SIGKILL
    (staging,) = os.listdir(out)
    assert staging.startswith(".manifest.json.tmp-"), staging
    rerun = _encode(model_path, data, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert _verbs(rerun.stdout) == ["encoded", "encoded"]
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole))
    for name in ("part-0.npy", "part-1.npy"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


# The `FULL_AT`-th staging file with suffix `FULL_SUFFIX` is written to /dev/full, whose
# writes fail with ENOSPC: a disk that fills up at that write.
_DISK_FULL = """
import os, tempfile
real, seen = tempfile.mkstemp, []
def mkstemp(*args, **kwargs):
    handle, path = real(*args, **kwargs)
    if kwargs.get("suffix") == os.environ["FULL_SUFFIX"]:
        seen.append(path)
        if len(seen) == int(os.environ["FULL_AT"]):
            os.dup2(os.open("/dev/full", os.O_WRONLY), handle)
    return handle, path
tempfile.mkstemp = mkstemp
"""

# A disk that fills up in the middle of a file: no file may grow past FULL_AT bytes
# (RLIMIT_FSIZE), so a write is cut short, then refused with EFBIG.
_FILE_TOO_LARGE = """
import os, resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["FULL_AT"]),) * 2)
"""


@pytest.mark.parametrize(
    "patch, suffix, at, finished, left",
    [
        (_DISK_FULL, ".npy", 2, 1, [MANIFEST, "part-0.npy"]),
        # part-1.npy is whole but not recorded: the rerun encodes it again.
        (_DISK_FULL, ".json", 3, 1, [MANIFEST, "part-0.npy", "part-1.npy"]),
        (_DISK_FULL, ".json", 1, 0, []),
        # The manifest (under 2 KB) fits, the first codes shard (12,128 bytes) does not.
        (_FILE_TOO_LARGE, "", 8192, 0, [MANIFEST]),
    ],
    ids=["second codes shard", "second manifest update", "first manifest", "mid-file"],
)
def test_a_full_disk_is_one_line_and_the_rerun_resumes(
    tmp_path, model_path, patch, suffix, at, finished, left
):
    data = tmp_path / "data"
    _write_shards(data, [1000, 400, 500])
    whole, out = tmp_path / "whole", tmp_path / "out"
    encode_shards(OnnxEncoder(model_path), str(data), whole)  # The reference.
    env = {**os.environ, "FULL_SUFFIX": suffix, "FULL_AT": str(at)}
    full = _encode(model_path, data, "--out", out, patch=patch, env=env)
    assert full.returncode == 2, full.stderr
    line = _one_line(full.stderr)
    reason = "No space left on device" if patch == _DISK_FULL else "File too large"
    assert line.startswith(f"keras-cae encode: error: {reason} while writing"), line
    assert f"{finished} finished shard{'s' * (finished != 1)} kept" in line, line
    assert sorted(os.listdir(out)) == left
    if left:
        assert json.loads((out / MANIFEST).read_text())["complete"] is False
    rerun = _encode(model_path, data, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert _verbs(rerun.stdout) == ["kept"] * finished + ["encoded"] * (3 - finished)
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole))
    for name in os.listdir(whole):
        if name != MANIFEST:
            assert (out / name).read_bytes() == (whole / name).read_bytes(), name


@pytest.mark.parametrize(
    "patch, at, reason",
    [(_DISK_FULL, 1, "No space left on device"), (_FILE_TOO_LARGE, 8192, "File too large")],
    ids=["disk full", "mid-file"],
)
def test_a_full_disk_is_one_line_for_a_single_file(tmp_path, model_path, patch, at, reason):
    x = np.random.default_rng(0).normal(size=(1000, FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)  # 24 KB; its codes 12 KB.
    out = tmp_path / "codes.npy"
    env = {**os.environ, "FULL_SUFFIX": ".npy", "FULL_AT": str(at)}
    full = _encode(model_path, tmp_path / "x.npy", "--out", out, patch=patch, env=env)
    assert full.returncode == 2, full.stderr
    line = _one_line(full.stderr)
    assert line.startswith(f"keras-cae encode: error: {reason} while writing"), line
    assert "nothing was written" in line
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]  # No codes, no staging, no lock file.
    rerun = _encode(model_path, tmp_path / "x.npy", "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    np.testing.assert_array_equal(np.load(out), OnnxEncoder(model_path).encode(x))


def test_an_input_rewritten_with_its_size_and_mtime_is_encoded_again(tmp_path, model_path):
    data = tmp_path / "data"
    _write_shards(data, [8, 8])
    encode_shards(OnnxEncoder(model_path), str(data), tmp_path / "out")
    before = os.stat(data / "part-1.npy")
    changed = np.full((8, FEATURES), 0.5, np.float32)
    np.save(data / "part-1.npy", changed)  # In place: same size.
    os.utime(data / "part-1.npy", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(data / "part-1.npy")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = encode_shards(OnnxEncoder(model_path), str(data), tmp_path / "out")
    assert (again.num_encoded, again.num_skipped) == (1, 1)
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "part-1.npy"), OnnxEncoder(model_path).encode(changed)
    )


def test_a_hand_edited_manifest_or_a_directory_in_place_is_not_a_traceback(
    tmp_path, model_path, capsys
):
    data, out = tmp_path / "data", tmp_path / "out"
    _write_shards(data, [4, 4, 4])
    argv = ["encode", model_path, str(data), "--out", str(out)]
    assert cli.main(argv) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"][0]["rows"] = "4"  # Not a row count: the shard is encoded again.
    del manifest["shards"][1]["rows"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert _verbs(capsys.readouterr().out) == ["encoded", "encoded", "kept"]
    os.remove(out / "part-2.npy")
    os.mkdir(out / "part-2.npy")
    _refused(capsys, argv, "holds a directory 'part-2.npy' where the codes of")
    manifest["shards"][0]["input"] = 5
    (out / MANIFEST).write_text(json.dumps(manifest))
    _refused(capsys, argv, "not a manifest of `keras-cae encode`")
