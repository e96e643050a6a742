"""PyTorch pickle checkpoints: the streaming writer against torch.load/transformers, the reader against
torch.save, and the refusals (code-executing pickles, corrupt files, shard names leaving the folder)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from modelport.converters.base import BFLOAT16, DTYPES, TensorInfo
from modelport.converters.pytorch import INDEX_FILE, PyTorchReader, PyTorchWriter, find_pytorch_files
from modelport.errors import ModelportError

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]


def sample_arrays() -> dict[str, np.ndarray]:
    """One array per supported dtype, with awkward values, plus scalars and empty tensors."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name, dtype in DTYPES.items():
        if dtype.kind == "b":
            array = rng.random((3, 5)) > 0.5
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, (3, 5), dtype=dtype, endpoint=True)
        else:
            array = rng.standard_normal((3, 5)).astype(dtype)
            array.flat[:4] = np.array([np.nan, np.inf, -np.inf, -0.0]).astype(dtype)
        arrays[f"matrix_{name}"] = array
    arrays["scalar_float32"] = np.array(1.5, dtype=np.float32)
    arrays["scalar_bfloat16"] = np.array(-2.25, dtype=BFLOAT16)
    arrays["scalar_int64"] = np.array(7, dtype=np.int64)
    arrays["empty_rows"] = np.zeros((0, 4), dtype=np.float16)
    arrays["empty_columns"] = np.zeros((3, 0), dtype=np.bool_)
    arrays["cube"] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    return arrays


def specs_of(arrays: dict[str, np.ndarray]) -> dict[str, TensorInfo]:
    return {name: TensorInfo(array.shape, array.dtype) for name, array in arrays.items()}


def write_checkpoint(out_dir: Path, arrays: dict[str, np.ndarray], max_shard_size: int | None = None) -> list[str]:
    writer = PyTorchWriter(out_dir, specs_of(arrays), max_shard_size)
    for name, array in arrays.items():
        writer.write(name, array)
    return writer.close()


def as_numpy(tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(BFLOAT16)
    return tensor.numpy()


def as_tensor(array: np.ndarray):
    """A torch tensor as torch itself would create it (from_numpy gives empty tensors zero strides)."""
    if array.dtype == BFLOAT16:
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor.clone(memory_format=torch.contiguous_format)


def assert_bit_exact(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


# ---------------------------------------------------------------------------------------------- writer


@pytest.mark.parametrize("mmap", [False, True])
def test_writer_output_loads_bit_exact(tmp_path, mmap):
    arrays = sample_arrays()
    assert write_checkpoint(tmp_path, arrays) == ["pytorch_model.bin"]
    loaded = torch.load(tmp_path / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=mmap)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].is_contiguous()
        assert_bit_exact(as_numpy(loaded[name]), array)


def test_writer_pickle_and_layout_mirror_torch_save(tmp_path):
    arrays = sample_arrays()
    write_checkpoint(tmp_path / "ours", arrays)
    torch.save(OrderedDict((name, as_tensor(array)) for name, array in arrays.items()), tmp_path / "pytorch_model.bin")
    ours_path = tmp_path / "ours" / "pytorch_model.bin"
    with zipfile.ZipFile(ours_path) as ours, zipfile.ZipFile(tmp_path / "pytorch_model.bin") as theirs:
        assert ours.read("pytorch_model/data.pkl") == theirs.read("pytorch_model/data.pkl")
        assert ours.read("pytorch_model/version") == theirs.read("pytorch_model/version") == b"3\n"
        assert ours.read("pytorch_model/byteorder") == b"little"
        data_records = [info for info in ours.infolist() if "/data/" in info.filename]
        assert len(data_records) == len(arrays)
        assert all(info.compress_type == zipfile.ZIP_STORED for info in ours.infolist())
    raw = ours_path.read_bytes()
    for info in data_records:
        name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        assert (info.header_offset + 30 + name_length + extra_length) % 64 == 0, info.filename


def test_writer_shards_with_index(tmp_path):
    arrays = {f"layer{i}.weight": np.full((10, 10), i, dtype=np.float32) for i in range(5)}
    files = write_checkpoint(tmp_path, arrays, max_shard_size=900)
    shards = [f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)]
    assert files == [*shards, INDEX_FILE]
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == 5 * 400
    assert set(index["weight_map"].values()) == set(shards)
    loaded = {}
    for shard in shards:
        part = torch.load(tmp_path / shard, weights_only=True, mmap=True)
        assert all(index["weight_map"][name] == shard for name in part)
        loaded.update(part)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert_bit_exact(as_numpy(loaded[name]), array)
    with PyTorchReader(tmp_path) as reader:
        assert reader.files() == [tmp_path / shard for shard in shards]
        assert reader.names() == list(arrays)
        assert_bit_exact(reader.read("layer4.weight"), arrays["layer4.weight"])


def test_writer_refuses_tensors_out_of_order(tmp_path):
    arrays = {"a": np.zeros(2, np.float32), "b": np.ones(2, np.float32)}
    writer = PyTorchWriter(tmp_path, specs_of(arrays))
    with pytest.raises(ModelportError, match="expecting a"):
        writer.write("b", arrays["b"])
    with pytest.raises(ModelportError, match="never written"):
        PyTorchWriter(tmp_path, specs_of(arrays)).close()


def test_bert_loads_written_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    write_checkpoint(tmp_path, {name: tensor.numpy() for name, tensor in model.state_dict().items()})
    model.config.save_pretrained(tmp_path)

    loaded, info = transformers.BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    input_ids = torch.tensor([[2, 15, 31, 7, 3]])
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids).last_hidden_state, model(input_ids).last_hidden_state)


# ---------------------------------------------------------------------------------------------- reader


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reader_reads_torch_save(tmp_path, zip_format):
    arrays = sample_arrays()
    path = tmp_path / "model.pt"
    torch.save({name: as_tensor(array) for name, array in arrays.items()}, path, _use_new_zipfile_serialization=zip_format)
    assert find_pytorch_files(path) == [path]
    with PyTorchReader(path) as reader:
        assert reader.files() == [path]
        assert reader.extras == []
        assert reader.infos == specs_of(arrays)
        for name, array in arrays.items():
            assert_bit_exact(reader.read(name), array)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_tensors_stay_in_the_file(tmp_path, zip_format):
    """Nothing is copied into memory on open, in either format: bytes changed in the file after opening are
    what a read sees (the reader maps the file), and views of one storage keep their offsets and strides."""
    path = tmp_path / "model.pt"
    base = torch.arange(24, dtype=torch.float32)
    torch.save({"a": base[:12].view(3, 4), "b": base[12:].view(4, 3).t(), "c": torch.full((1000,), 7.0)}, path,
               _use_new_zipfile_serialization=zip_format)
    raw = path.read_bytes()
    sevens = np.full(1000, 7.0, np.float32).tobytes()
    with PyTorchReader(path) as reader:
        with open(path, "r+b") as file:  # the same size, other values: only a mapping can see them
            file.seek(raw.index(sevens))
            file.write(np.full(1000, 9.0, np.float32).tobytes())
        assert_bit_exact(reader.read("c"), np.full(1000, 9.0, np.float32))
        assert_bit_exact(reader.read("a"), np.arange(12, dtype=np.float32).reshape(3, 4))
        assert_bit_exact(reader.read("b"), np.arange(12, 24, dtype=np.float32).reshape(4, 3).T)


def test_truncated_legacy_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1000)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelportError, match=r"model.pt: file is truncated"):
        PyTorchReader(path)


def test_reader_unwraps_and_flattens(tmp_path):
    state_dict = {
        "encoder": {"weight": torch.ones(2, 3, dtype=torch.bfloat16), "bias": torch.zeros(2), "steps": 4},
        "head.weight": torch.arange(6.0).reshape(2, 3).t(),  # not contiguous
        "head.parameter": torch.nn.Parameter(torch.full((2,), 0.5)),
    }
    path = tmp_path / "training.ckpt"
    torch.save({"module": state_dict, "iteration": 5, "name": "run-1"}, path)
    with PyTorchReader(path) as reader:
        assert reader.names() == ["encoder.weight", "encoder.bias", "head.weight", "head.parameter"]
        assert reader.extras == ["iteration", "name", "encoder.steps"]
        assert reader.infos["encoder.weight"] == TensorInfo((2, 3), BFLOAT16)
        assert_bit_exact(reader.read("encoder.weight"), np.ones((2, 3), dtype=BFLOAT16))
        assert_bit_exact(reader.read("head.weight"), np.arange(6.0, dtype=np.float32).reshape(2, 3).T.copy())
        assert_bit_exact(reader.read("head.parameter"), np.full(2, 0.5, dtype=np.float32))


def test_reader_reads_sharded_index(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "part1.bin")
    torch.save({"b": torch.zeros(3, dtype=torch.int32)}, tmp_path / "part2.bin")
    weight_map = {"a": "part1.bin", "b": "part2.bin"}
    (tmp_path / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    expected_files = [tmp_path / "part1.bin", tmp_path / "part2.bin"]
    assert find_pytorch_files(tmp_path) == find_pytorch_files(tmp_path / INDEX_FILE) == expected_files
    with PyTorchReader(tmp_path / INDEX_FILE) as reader:
        assert reader.files() == expected_files
        assert reader.infos == {"a": TensorInfo((2,), np.dtype(np.float32)), "b": TensorInfo((3,), np.dtype(np.int32))}
        assert_bit_exact(reader.read("b"), np.zeros(3, dtype=np.int32))


def test_find_pytorch_files_ignores_other_checkpoints(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "x.safetensors"}}))
    (tmp_path / "config.json").write_text("{}")
    assert find_pytorch_files(tmp_path) is None
    assert find_pytorch_files(tmp_path / "model.safetensors.index.json") is None
    assert find_pytorch_files(tmp_path / "absent.bin") is None


def test_writing_needs_no_torch_and_reading_says_how_to_get_it(tmp_path):
    """The writer names torch's classes as text, so it runs (and is fast to start) where torch is missing; the
    reader needs torch.load and says so."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from modelport.converters.base import TensorInfo\n"
        "from modelport.converters.pytorch import PyTorchReader, PyTorchWriter\n"
        "from modelport.errors import ModelportError\n"
        "array = np.arange(6, dtype=np.float32).reshape(2, 3)\n"
        "writer = PyTorchWriter(sys.argv[1], {'w': TensorInfo((2, 3), array.dtype)})\n"
        "writer.write('w', array)\n"
        "writer.close()\n"
        "try:\n    PyTorchReader(sys.argv[1])\nexcept ModelportError as error:\n    print(error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True, check=True)
    assert "pip install torch" in result.stdout
    loaded = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert np.array_equal(loaded["w"].numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))


# ---------------------------------------------------------------------------------------------- refusals


class RunsShellCommand:
    """Pickles as a call to os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_code_executing_pickle(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    torch.save({"weight": torch.ones(2), "payload": RunsShellCommand(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ModelportError) as caught:
        PyTorchReader(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused to unpickle: it would execute code (")
    assert "system" in message and "\n" not in message
    assert not marker.exists()


def test_refuses_truncated_zip(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelportError, match=f"^{re.escape(str(path))}: cannot load as a PyTorch checkpoint") as caught:
        PyTorchReader(path)
    assert "\n" not in str(caught.value)


def test_refuses_file_that_is_not_a_pickle(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_text("this is a README, not weights\n")
    with pytest.raises(ModelportError, match=f"^{re.escape(str(path))}: cannot load as a PyTorch checkpoint"):
        PyTorchReader(tmp_path)


@pytest.mark.parametrize(
    "shard, problem",
    [("../x.bin", "lies outside the checkpoint folder"), ("/tmp/x.bin", "lies outside"), ("gone.bin", "is missing")],
)
def test_refuses_bad_shard_names(tmp_path, shard, problem):
    torch.save({"a": torch.ones(1)}, tmp_path / "x.bin")
    index = tmp_path / "checkpoint" / INDEX_FILE
    index.parent.mkdir()
    index.write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(ModelportError, match=re.escape(f"{index}: shard {shard} {problem}")):
        PyTorchReader(index.parent)


def test_refuses_index_naming_tensor_missing_from_shard(tmp_path):
    torch.save({"a": torch.ones(1)}, tmp_path / "part.bin")
    (tmp_path / INDEX_FILE).write_text(json.dumps({"weight_map": {"a": "part.bin", "b": "part.bin"}}))
    with pytest.raises(ModelportError, match="part.bin: tensor b, listed in the index, is missing"):
        PyTorchReader(tmp_path)
