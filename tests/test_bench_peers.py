"""The parts of the peers benchmark (benchmarks/peers/bench.py) that need no server:
request building, answer decoding, the bit-exact comparison, CPU accounting from a
/proc tree (a fake one here), the tables, the targets and the JSON. No peer venv."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks/peers/bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_peers"] = bench  # dataclasses look their module up there.
_spec.loader.exec_module(bench)


# ------------------------------------------------------------------------------------------
# Requests.


def test_v2_body_reads_back_as_the_same_float32_rows():
    x = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    x[0, 0] = np.float32(0.1)  # Not a float64: written in full, it must read back the same.
    body = json.loads(bench.v2_body(x))
    (tensor,) = body["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("x", [3, 5], "FP32")
    got = np.asarray(tensor["data"], dtype=np.float64).astype(np.float32).reshape(3, 5)
    assert np.array_equal(got.view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("x", [np.zeros((1, 2)), np.zeros(2, np.float32)])
def test_v2_body_refuses_what_is_not_2d_float32(x):
    with pytest.raises(ValueError, match="2-D float32"):
        bench.v2_body(x)


def test_bad_requests_are_the_eight_of_the_issue_each_wrong_in_one_way():
    bad = dict(bench.bad_requests(4))
    assert list(bad) == ["NaN", "bool", "string", "wrong shape", "wrong datatype",
                         "missing data", "malformed JSON", "huge shape"]  # fmt: skip
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad["malformed JSON"])
    tensors = {k: json.loads(v)["inputs"][0] for k, v in bad.items() if k != "malformed JSON"}
    good = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[0.5] * 4]}
    differs = {
        k: sorted(key for key in good if t.get(key) != good[key]) for k, t in tensors.items()
    }
    assert differs == {"NaN": ["data"], "bool": ["data"], "string": ["data"],
                       "wrong shape": ["data", "shape"], "wrong datatype": ["datatype"],
                       "missing data": ["data"], "huge shape": ["shape"]}  # fmt: skip
    assert b"NaN" in bad["NaN"] and math.isnan(tensors["NaN"]["data"][0][-1])
    assert tensors["bool"]["data"] == [[True] * 4] and tensors["string"]["data"] == [["0.5"] * 4]
    assert "data" not in tensors["missing data"] and tensors["wrong datatype"]["datatype"] == "FP64"
    assert tensors["wrong shape"]["shape"] == [1, 3] and tensors["huge shape"]["shape"][0] >= 10**9


# ------------------------------------------------------------------------------------------
# Answers and the bit-exact comparison.


def _answer(text_data: str, shape: str = "[1,2]") -> bytes:
    return f'{{"outputs":[{{"name":"code","shape":{shape},"data":{text_data}}}]}}'.encode()


def test_decode_v2_takes_float32_written_in_full_or_shortest():
    tenth = float(np.float32(0.1))  # 0.10000000149011612
    for text in (f"[{tenth!r},0.5]", "[0.1,0.5]", "[[0.1],[0.5]]"):
        got = bench.decode_v2(_answer(text))
        assert got.dtype == np.float32 and got.shape == (1, 2)
        assert bench.bit_exact(got, np.float32([[0.1, 0.5]]))


@pytest.mark.parametrize(
    "body",
    [
        _answer("[0.1000000001,0.5]"),  # Not a float32 value: rounding would hide it.
        _answer("[0.5]"),  # Fewer numbers than the shape says.
        b'{"predictions": [[0.5, 0.5]]}',
        b"not json",
    ],
)
def test_decode_v2_refuses_what_is_not_a_full_float32_v2_answer(body):
    with pytest.raises(ValueError, match="body"):
        bench.decode_v2(body)


def test_bit_exact_compares_bits():
    a = np.float32([[0.0, 1.5, np.nan]])
    assert bench.bit_exact(a, a.copy())
    assert not bench.bit_exact(np.float32([-0.0]), np.float32([0.0]))
    assert not bench.bit_exact(a, a.reshape(3, 1))
    b = a.copy()
    b[0, 1] = np.nextafter(np.float32(1.5), np.float32(2))  # One ulp.
    assert not bench.bit_exact(a, b)
    with pytest.raises(ValueError, match="float32"):
        bench.bit_exact(a.astype(np.float64), a)


@pytest.mark.parametrize(
    ("status", "body", "cell"),
    [
        (400, b'{"error": "NaN"}', "400"),
        (200, _answer("[NaN,0.5]"), "200, answers NaN"),
        (200, _answer("[null,0.5]"), "200, answers null"),
        (200, _answer("[0.25,0.5]"), "200"),
        (200, b"[]", "200, not a v2 answer"),
    ],
)
def test_answer_of(status, body, cell):
    assert bench.answer_of(status, body) == cell


# ------------------------------------------------------------------------------------------
# CPU accounting from /proc.


def _fake_proc(tmp_path: Path, processes: dict[int, tuple[str, int, tuple[int, ...]]]) -> str:
    """processes: pid -> (name, parent, (utime, stime, cutime, cstime))."""
    for pid, (name, parent, (utime, stime, cutime, cstime)) in processes.items():
        folder = tmp_path / str(pid)
        folder.mkdir()
        # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime cutime cstime priority nice ...
        (folder / "stat").write_text(
            f"{pid} ({name}) S {parent} {pid} {pid} 0 -1 4194560 900 800 7 6 "
            f"{utime} {stime} {cutime} {cstime} 20 0 1 0 100 1000 200\n"
        )
    (tmp_path / "self").mkdir()  # Not a pid: skipped.
    (tmp_path / "99").mkdir()  # A process that went away between listing and reading.
    return str(tmp_path)


def test_tree_cpu_seconds_sums_the_tree_and_nothing_else(tmp_path):
    proc = _fake_proc(tmp_path, {
        1: ("init", 0, (5000, 5000, 0, 0)),
        10: ("python", 1, (100, 20, 3, 1)),
        11: ("tritonserver", 10, (40, 10, 0, 0)),
        12: ("triton_python_backend_stub) S 1 (odd", 11, (7, 3, 0, 0)),  # ')' in a name.
        13: ("worker", 10, (1, 1, 0, 0)),
        20: ("other", 1, (900, 900, 0, 0)),
    })  # fmt: skip
    expected_ticks = (100 + 20 + 3 + 1) + (40 + 10) + (7 + 3) + (1 + 1)
    assert bench.tree_cpu_seconds(10, proc, ticks_per_s=100) == expected_ticks / 100
    assert bench.tree_cpu_seconds(11, proc, ticks_per_s=100) == (50 + 10) / 100
    with pytest.raises(ValueError, match="root=42"):
        bench.tree_cpu_seconds(42, proc, ticks_per_s=100)


def test_tree_cpu_seconds_of_this_process_grows_with_work():
    before = bench.tree_cpu_seconds(os.getpid())
    deadline = before + 0.05
    while bench.tree_cpu_seconds(os.getpid()) < deadline:
        sum(range(10_000))
    assert bench.tree_cpu_seconds(os.getpid()) >= before + 0.05


# ------------------------------------------------------------------------------------------
# Load generator output.


def test_parse_wrk_and_its_errors():
    text = ("Running 10s test @ http://127.0.0.1:1\n  1 threads and 8 connections\n"
            "  41234 requests in 10.00s, 20.1MB read\n  Non-2xx or 3xx responses: 12\n"
            "Requests/sec:   4123.40\nTransfer/sec:      2.01MB\n")  # fmt: skip
    assert bench.parse_wrk(text) == {
        "requests": 41234,
        "req_per_s": 4123.4,
        "errors": "Non-2xx or 3xx responses: 12",
    }
    with pytest.raises(ValueError, match="wrk"):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_parse_h2load_and_its_errors():
    text = ("finished in 10.00s, 1950.30 req/s, 9.5MB/s\n"
            "requests: 19503 total, 19511 started, 19503 done, 19500 succeeded, 3 failed, "
            "0 errored, 0 timeout\n")  # fmt: skip
    assert bench.parse_h2load(text) == {
        "requests": 19500,
        "req_per_s": 1950.3,
        "errors": "3 failed, 0 errored",
    }
    with pytest.raises(ValueError, match="h2load"):
        bench.parse_h2load("")


def test_wrk_script_body_is_the_request_byte_for_byte(tmp_path):
    body = bench.v2_body(np.float32([[0.5, 1e-7]])) + b'\\"\n'
    script = Path(bench.wrk_script(body, "/v2/models/encoder/infer", str(tmp_path / "s.lua")))
    line = next(x for x in script.read_text().splitlines() if x.startswith("wrk.body = "))
    escaped = line[len('wrk.body = "') : -1]
    # Lua's decimal escapes, undone independently.
    decoded = bytes(int(escaped[i + 1 : i + 4]) if c == "\\" else ord(c)
                    for i, c in _lua_chars(escaped))  # fmt: skip
    assert decoded == body


def _lua_chars(text: str):
    i = 0
    while i < len(text):
        yield i, text[i]
        i += 4 if text[i] == "\\" else 1


# ------------------------------------------------------------------------------------------
# Summary, table, targets, JSON.

_RATES = {
    "keras-cae": {1: [4000.0, 5000.0, 4500.0], 64: [150.0, 160.0, 155.0]},
    "kserve": {1: [1000.0, 1100.0, 900.0], 64: [50.0, 52.0, 54.0]},
    "triton": {1: [1300.0, 1350.0, 1325.0], 64: [170.0, 172.0, 174.0]},
    "floor": {1: [8000.0, 9000.0, 8500.0], 64: [200.0, 220.0, 210.0]},
}
_CPU = {"keras-cae": {1: [200.0, 220.0, 210.0], 64: [5000.0]}, "kserve": {1: [990.0]}}


def test_summarize_takes_medians_and_ratios_to_the_baseline():
    summary = {e["server"]: e["rows"] for e in bench.summarize(_RATES, _CPU, "keras-cae")}
    assert summary["keras-cae"][1]["req_per_s"] == 4500.0
    assert summary["triton"][64]["vs_baseline"] == 172.0 / 155.0
    assert summary["keras-cae"][1]["cpu_us_per_req"] == 210.0
    assert math.isnan(summary["kserve"][64]["cpu_us_per_req"])
    assert summary["floor"][64]["rounds"] == [200.0, 220.0, 210.0]
    with pytest.raises(ValueError, match="baseline"):
        bench.summarize(_RATES, _CPU, "nope")


def test_format_table():
    summary = bench.summarize(_RATES, _CPU, "keras-cae")
    lines = bench.format_table(summary, {"keras-cae": "keras-cae serve"}, "keras-cae").split("\n")
    assert lines[0] == (
        "| server | 1 row req/s | ÷ keras-cae serve | 64 rows req/s | "
        "÷ keras-cae serve | CPU µs/req (1 row) | CPU µs/req (64 rows) |"
    )
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| keras-cae serve | 4,500 | 1.00 | 155 | 1.00 | 210 | 5,000 |"
    assert lines[3] == "| kserve | 1,000 | 0.22 | 52 | 0.34 | 990 | – |"


def test_format_bad_table_keeps_every_column_in_order():
    bad = {"a": {"NaN": "400", "bool": "400"}, "b": {"NaN": "200, answers NaN", "x": "500"}}
    assert bench.format_bad_table(bad, {"a": "A"}).split("\n") == [
        "| server | NaN | bool | x |", "|---|---|---|---|",
        "| A | 400 | 400 | – |", "| b | 200, answers NaN | – | 500 |"]  # fmt: skip


def test_targets_against_the_best_peer_the_floor_and_grpc():
    summary = bench.summarize(_RATES, _CPU, "keras-cae")
    grpc = {
        "keras-cae": {"grpc_64": 300.0, "http_json_64": 155.0},
        "keras-cae [digits]": {"grpc_64": 1500.0, "http_json_64": 700.0},
        "keras-cae-other": {"grpc_64": 1.0, "http_json_64": 1.0},  # Another server's.
        "grpc.aio no-op": {"grpc_64": 4000.0},  # No HTTP: no ratio.
    }
    found = bench.targets(summary, grpc, ["keras-cae"])["keras-cae"]
    assert found == {
        "1 row vs best peer (triton) >= 1.2": {"ratio": 4500 / 1325, "met": True},
        "1 row vs floor >= 0.7": {"ratio": 4500 / 8500, "met": False},
        "64 rows vs best peer (triton) >= 1.2": {"ratio": 155 / 172, "met": False},
        "64 rows vs floor >= 0.85": {"ratio": 155 / 210, "met": False},
        "gRPC 64 rows vs HTTP JSON 64 rows >= 2": {"ratio": 300 / 155, "met": False},
        "gRPC 64 rows vs HTTP JSON 64 rows >= 2 [digits]": {"ratio": 1500 / 700, "met": True},
    }


def test_format_grpc_table():
    grpc = {"k": {"grpc_64": 300.0, "http_json_64": 150.0, "cpu_us_per_req": 1234.0},
            "grpc.aio no-op": {"grpc_64": 4000.0, "cpu_us_per_req": math.nan}}  # fmt: skip
    assert bench.format_grpc_table(grpc, 64).split("\n")[2:] == [
        "| k | 300 | 150 | 2.00 | 1,234 |", "| grpc.aio no-op | 4,000 | – | – | – |"]  # fmt: skip


def test_write_json_is_atomic_and_overwrites_only_when_asked(tmp_path):
    path = tmp_path / "results" / "peers.json"
    bench.write_json(str(path), {"a": math.nan, "b": [1, 2]})
    assert json.loads(path.read_text())["b"] == [1, 2]
    with pytest.raises(FileExistsError, match="overwrite"):
        bench.write_json(str(path), {"a": 2}, overwrite=False)
    bench.write_json(str(path), {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["peers.json"]  # No temporaries.


def test_keras_cae_label():
    assert bench.keras_cae_label(None) == "keras-cae"
    assert bench.keras_cae_label("/work/main/.venv/bin/keras-cae") == "keras-cae (main)"
    assert bench.keras_cae_label("/opt/kc") == "keras-cae (/opt/kc)"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--duration", "0"], "--duration should be positive. Received: 0"),
        (["--keras-cae-bin", "/nonexistent/keras-cae"], "--keras-cae-bin should be an executable"),
        (["--peer-names", "torchserve"], "invalid choice: 'torchserve'"),
    ],
)
def test_cli_refuses_bad_peer_options_with_exit_2(argv, words):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/serve.py"), "--peers", *argv],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and words in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("serve.py: error:")


def test_check_all_after_the_rounds_reports_a_server_that_is_gone():
    gone = bench.Server("gone", None, bench.free_port(), "")  # Nothing listens there.
    bodies = {("", 1): bench.v2_body(np.float32([[0.5, 0.5]]))}
    expected = {("", 1): np.float32([[0.25]])}
    found = bench.check_all({"gone": gone}, bodies, expected, {}, 1, strict=False)
    assert found["gone"].startswith("FAILED: ")
    with pytest.raises(ConnectionRefusedError):
        bench.check_all({"gone": gone}, bodies, expected, {}, 1)
