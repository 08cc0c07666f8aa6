"""The `"triton"` export format: a Triton model repository, checked with Triton's own proto.

Every check reads the files back independently: ``config.pbtxt`` with the
`model_config_pb2` that ships with tritonclient and protobuf's text parser, the graph
with `onnx`, the model's outputs with onnxruntime against Keras. The v2 check starts
`keras-cae serve` for real on loopback and sends it a request built from
``config.pbtxt`` alone.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb2  # The test extra has tritonclient.

import keras_cae
from keras_cae import export
from keras_cae.cli import main
from keras_cae.export import triton
from tests._loopback import free_port, running_server, v2_infer

FEATURES, CODE = 12, 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, export.ExportResult]:
    model = keras_cae.dense_autoencoder(FEATURES, CODE, seed=5)
    out = tmp_path_factory.mktemp("triton") / "out"
    result = export.export_encoder(
        model, out, formats=("onnx", "triton"), parts=("encoder", "decoder"), model_name="digits"
    )
    return model, result


def _parse_config(model_dir: str) -> Any:
    with open(os.path.join(model_dir, "config.pbtxt"), encoding="utf-8") as file:
        return text_format.Parse(file.read(), pb2.ModelConfig())


def _graph_tensors(values: Any) -> list[tuple[str, str, list[int]]]:
    """(name, Triton type, dims without batch) read from the ONNX graph, mapped through
    numpy's dtype name (an independent route from the exporter's table)."""
    tensors = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        assert not dims[0].HasField("dim_value"), "the batch axis must be dynamic"
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        triton_type = {"float32": "TYPE_FP32", "float64": "TYPE_FP64"}[dtype.name]
        tensors.append((value.name, triton_type, [d.dim_value for d in dims[1:]]))
    return tensors


def test_repository_layout_and_manifest(exported):
    _, result = exported
    repository = os.path.join(result.out_dir, "triton")
    assert sorted(os.listdir(repository)) == ["digits", "digits_decoder"]
    for name in ("digits", "digits_decoder"):
        assert sorted(os.listdir(os.path.join(repository, name))) == ["1", "config.pbtxt"]
        assert os.listdir(os.path.join(repository, name, "1")) == ["model.onnx"]
    assert result.path("triton") == os.path.join(repository, "digits")
    assert result.path("triton", part="decoder") == os.path.join(repository, "digits_decoder")
    with open(result.manifest) as file:
        manifest = json.load(file)
    listed = {(a["part"], a["format"]): a["path"] for a in manifest["artifacts"]}
    assert listed[("encoder", "triton")] == "triton/digits"
    assert listed[("decoder", "triton")] == "triton/digits_decoder"


@pytest.mark.parametrize(
    "name, io_names, shapes",
    [
        ("digits", ("x", "code"), ([FEATURES], [CODE])),
        ("digits_decoder", ("code", "reconstruction"), ([CODE], [FEATURES])),
    ],
)
def test_config_parses_with_tritons_proto_and_matches_the_graph(exported, name, io_names, shapes):
    _, result = exported
    model_dir = os.path.join(result.out_dir, "triton", name)
    config = _parse_config(model_dir)
    graph = onnx.load(os.path.join(model_dir, "1", "model.onnx")).graph
    assert config.name == name
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 1024
    assert config.HasField("dynamic_batching")
    configured = [
        [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in field]
        for field in (config.input, config.output)
    ]
    assert configured == [_graph_tensors(graph.input), _graph_tensors(graph.output)]
    # And what the export promised: the part's names and one sample's shape.
    assert configured == [
        [(io_names[0], "TYPE_FP32", shapes[0])],
        [(io_names[1], "TYPE_FP32", shapes[1])],
    ]


def test_model_file_matches_keras(exported, rng):
    model, result = exported
    x = rng.random((7, FEATURES), dtype=np.float32)
    codes = np.asarray(model.encoder(x, training=False))
    encoder = export.OnnxEncoder(os.path.join(result.path("triton"), "1", "model.onnx"))
    for batch in (x[:1], x):
        expected = codes[: len(batch)]
        np.testing.assert_allclose(encoder.encode(batch), expected, rtol=0, atol=1e-6)
    decoder = export.OnnxEncoder(
        os.path.join(result.path("triton", part="decoder"), "1", "model.onnx")
    )
    np.testing.assert_allclose(
        decoder.encode(codes), np.asarray(model.decoder(codes, training=False)), rtol=0, atol=1e-6
    )
    figures = {(a.part, a.format): a.max_abs_diff for a in result.artifacts}
    assert max(figures[("encoder", "triton")].values()) <= 1e-6


@pytest.mark.parametrize(
    "name", ["my model", "a/b", "../up", "_hidden", "", "x" * 129, 7], ids=repr
)
def test_a_name_triton_would_reject_is_a_value_error(exported, tmp_path, name):
    model, _ = exported
    with pytest.raises(ValueError, match=r"Invalid model_name=.*letters, digits"):
        export.export_encoder(model, tmp_path / "out", formats="triton", model_name=name)
    assert not os.path.exists(tmp_path / "out")


def test_model_name_needs_the_triton_format(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ValueError, match=r"model_name='digits', formats=\['onnx'\]"):
        export.export_encoder(model, tmp_path / "out", formats="onnx", model_name="digits")


def _copy_model(result: export.ExportResult, tmp_path: Any, name: str = "digits") -> str:
    import shutil

    target = tmp_path / name
    shutil.copytree(result.path("triton"), target)
    return str(target)


def test_verify_model_refuses_a_config_that_disagrees_with_the_graph(exported, tmp_path):
    _, result = exported
    assert triton.verify_model(result.path("triton")).endswith(os.path.join("1", "model.onnx"))
    model_dir = _copy_model(result, tmp_path)
    config_path = os.path.join(model_dir, "config.pbtxt")
    text = open(config_path).read()
    with open(config_path, "w") as file:
        file.write(text.replace(f"dims: {FEATURES}", f"dims: {FEATURES + 1}"))
    with pytest.raises(
        ValueError, match=r"disagrees with the model: inputs \[\('x', 'TYPE_FP32', \[13\]\)\]"
    ):
        triton.verify_model(model_dir)
    with open(config_path, "w") as file:
        file.write(text.replace("max_batch_size", "max_batch"))
    with pytest.raises(ValueError, match="does not parse with Triton's model_config.proto"):
        triton.verify_model(model_dir)
    renamed = _copy_model(result, tmp_path, "other")
    with pytest.raises(ValueError, match="name 'digits' is not the directory name 'other'"):
        triton.verify_model(renamed)
    os.remove(os.path.join(renamed, "1", "model.onnx"))
    with pytest.raises(ValueError, match="should hold exactly config.pbtxt and 1/model.onnx"):
        triton.verify_model(renamed)


def test_model_config_needs_a_dynamic_batch_axis(exported):
    _, result = exported
    model = onnx.load(result.path("onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    with pytest.raises(ValueError, match=r"input 'x' has shape \[4, 12\]; .*dynamic first"):
        triton.model_config(model, "digits")
    with pytest.raises(ValueError, match="Received: 0"):
        triton.model_config(onnx.load(result.path("onnx")), "digits", max_batch_size=0)


def test_without_tritonclient_the_format_says_what_to_install(exported, tmp_path, monkeypatch):
    model, _ = exported
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    with pytest.raises(ImportError, match=r"pip install 'tritonclient\[grpc\]'"):
        export.export_encoder(model, tmp_path / "out", formats="triton")
    assert not os.path.exists(tmp_path / "out")


def test_cli_export_format_triton(exported, tmp_path, capsys):
    model, _ = exported
    model.save(tmp_path / "m.keras")
    out = tmp_path / "out"
    argv = ["export", str(tmp_path / "m.keras"), "--out", str(out), "--format", "triton"]
    assert main([*argv, "--name", "digits"]) == 0
    assert sorted(os.listdir(out)) == ["manifest.json", "triton"]
    assert _parse_config(str(out / "triton" / "digits")).name == "digits"
    assert "triton/digits" in capsys.readouterr().out
    assert main([*argv, "--overwrite", "--name", "bad name"]) == 2
    assert "Invalid model_name='bad name'" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0  # Without --name: named after the part.
    assert os.listdir(out / "triton") == ["encoder"]


# ------------------------------------------------------------------------------------------
# keras-cae serve answers the v2 requests that Triton answers for this repository.


def triton_model_metadata(model_dir: str) -> dict[str, Any]:
    """The v2 model metadata Triton reports for a model of the repository: the config's
    tensors with the batch axis first as -1, types without ``TYPE_``, the versions."""
    config = _parse_config(model_dir)

    def tensors(field: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "datatype": pb2.DataType.Name(t.data_type).removeprefix("TYPE_"),
                "shape": [-1, *t.dims],
            }
            for t in field
        ]

    return {
        "name": config.name,
        "versions": sorted(d for d in os.listdir(model_dir) if d.isdigit()),
        "platform": config.platform,
        "inputs": tensors(config.input),
        "outputs": tensors(config.output),
    }


def test_keras_cae_serve_answers_what_triton_would(exported, tmp_path, rng):
    import tritonclient.http as httpclient

    _, result = exported
    model_dir = result.path("triton")
    model_path = os.path.join(model_dir, "1", "model.onnx")
    expected = triton_model_metadata(model_dir)
    (tensor,), (output,) = expected["inputs"], expected["outputs"]
    x = rng.random((5, FEATURES), dtype=np.float32)
    port = free_port()
    command = [os.path.join(os.path.dirname(sys.executable), "keras-cae"), "serve", model_path]
    command += ["--name", expected["name"], "--port", str(port)]
    with running_server(command, port, str(tmp_path / "log")) as url:
        client = httpclient.InferenceServerClient(url)
        try:
            assert client.get_model_metadata(expected["name"]) == expected
        finally:
            client.close()
        # A request built from config.pbtxt alone.
        codes = v2_infer(
            url, expected["name"], tensor["name"], tensor["datatype"], x, output["name"]
        )
    np.testing.assert_array_equal(codes, export.OnnxEncoder(model_path).encode(x))
