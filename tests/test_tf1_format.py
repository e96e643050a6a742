"""The native TF1 checkpoint reader and writer, cross-checked against real TensorFlow, plus their errors."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.converters import tf1
from modelport.converters.base import DTYPES, TensorInfo
from modelport.converters.tf1 import TF1Reader, TF1Writer, find_tf1_prefix
from modelport.errors import ModelportError

# Enough tensors with distinct ~100-byte keys to need two of TensorFlow's 256 KiB index blocks.
TF_FILLER_COUNT = 2500


def sample_tensors(filler_count: int) -> dict[str, np.ndarray]:
    """Every supported dtype (random bits, so NaN payloads too), a scalar step, an empty tensor, and
    filler tensors sharing a long name prefix."""
    rng = np.random.default_rng(0)
    tensors = {}
    for dtype_name, dtype in DTYPES.items():
        if dtype == np.bool_:
            tensors[f"bert/encoder/layer_0/{dtype_name}"] = rng.integers(0, 2, (3, 5)).astype(bool)
        else:
            raw = rng.integers(0, 256, 3 * 5 * dtype.itemsize, dtype=np.uint8)
            tensors[f"bert/encoder/layer_0/{dtype_name}"] = raw.view(dtype).reshape(3, 5)
    tensors["global_step"] = np.array(1000, dtype=np.int64)
    tensors["bert/encoder/layer_0/attention/self/query/kernel"] = rng.standard_normal((8, 4), dtype=np.float32)
    tensors["empty"] = np.zeros((0, 4), np.float32)
    for i in range(40):  # long shared prefixes, compressed across restart points
        tensors["shared/" + "p" * 300 + f"/{i}"] = np.full((2,), i, np.int32)
    for i in range(filler_count):
        tensors[f"{i:05d}/bert/encoder/layer_{i}/attention/self/query/kernel/" + "x" * 60] = np.array([i], np.float32)
    return tensors


def assert_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.tobytes() == expected.tobytes()


def write_native(folder: Path, tensors: dict[str, np.ndarray]) -> list[str]:
    writer = TF1Writer(folder, {name: TensorInfo(a.shape, a.dtype) for name, a in tensors.items()})
    for name, array in tensors.items():
        writer.write(name, array)
    return writer.close()


def data_block_count(index_path: Path) -> int:
    """The entries of the index block: one per data block."""
    table = index_path.read_bytes()
    _metaindex, position = tf1._read_handle(table[-48:], 0)
    index_handle, _ = tf1._read_handle(table[-48:], position)
    return len(tf1._block_entries(tf1._read_block(table, index_handle)))


@pytest.fixture(scope="module")
def tf():
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def native_tensors():
    return sample_tensors(filler_count=300)


@pytest.fixture(scope="module")
def native_checkpoint(tmp_path_factory, native_tensors) -> Path:
    folder = tmp_path_factory.mktemp("native")
    write_native(folder, native_tensors)
    return folder


def test_reads_what_tensorflow_saves(tf, tmp_path):
    tensors = sample_tensors(TF_FILLER_COUNT)
    prefix = tmp_path / "model.ckpt"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=list(tensors), shape_and_slices=[""] * len(tensors),
                      tensors=[tf.constant(array) for array in tensors.values()])
    assert data_block_count(tmp_path / "model.ckpt.index") > 1
    with TF1Reader(prefix) as reader:
        assert reader.names() == sorted(tensors, key=str.encode)
        for name, expected in tensors.items():
            assert reader.infos[name] == TensorInfo(expected.shape, expected.dtype)
            array = reader.read(name)
            assert_identical(array, expected)
            assert not array.flags.writeable
        assert reader.files() == [tmp_path / "model.ckpt.index", tmp_path / "model.ckpt.data-00000-of-00001"]


def test_follows_saver_state_file_even_after_the_folder_moves(tf, tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        kernel = tf.compat.v1.get_variable("bert/embeddings/word_embeddings", initializer=np.ones((4, 3), np.float32))
        step = tf.compat.v1.train.get_or_create_global_step()
        increment = tf.compat.v1.assign_add(kernel, np.ones((4, 3), np.float32))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(tmp_path / "train" / "model.ckpt"), global_step=1)
            session.run(increment)
            saver.save(session, str(tmp_path / "train" / "model.ckpt"), global_step=2)
    moved = tmp_path / "moved"
    (tmp_path / "train").rename(moved)  # the state file keeps the old absolute paths
    assert str(tmp_path / "train") in (moved / "checkpoint").read_text()
    with TF1Reader(moved) as reader:
        assert reader.prefix == moved / "model.ckpt-2"
        assert set(reader.names()) == {kernel.op.name, step.op.name}
        assert_identical(reader.read(kernel.op.name), np.full((4, 3), 2, np.float32))
        assert_identical(reader.read("global_step"), np.array(0, np.int64))


def test_tensorflow_reads_what_the_writer_writes(tf, native_checkpoint, native_tensors):
    assert data_block_count(native_checkpoint / "model.ckpt.index") > 1
    assert tf.train.latest_checkpoint(str(native_checkpoint)) == str(native_checkpoint / "model.ckpt")
    reader = tf.train.load_checkpoint(str(native_checkpoint / "model.ckpt"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    assert set(shapes) == set(native_tensors)
    for name, expected in native_tensors.items():
        assert tuple(shapes[name]) == expected.shape
        assert np.dtype(dtypes[name].as_numpy_dtype) == expected.dtype
        assert_identical(np.asarray(reader.get_tensor(name)), expected)


def test_native_round_trip_is_bit_exact(native_checkpoint, native_tensors):
    assert sorted(os.listdir(native_checkpoint)) == ["checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    with TF1Reader(native_checkpoint) as reader:
        assert list(reader.infos) == sorted(native_tensors, key=str.encode)
        for name, expected in native_tensors.items():
            assert_identical(reader.read(name), expected)


@pytest.mark.parametrize("given_path", ["", "model.ckpt", "model.ckpt.index", "model.ckpt.data-00000-of-00001"])
def test_finds_the_prefix_from_any_of_its_paths(native_checkpoint, given_path):
    assert find_tf1_prefix(native_checkpoint / given_path) == native_checkpoint / "model.ckpt"


def test_writer_returns_its_files_and_a_state_file(tmp_path):
    files = write_native(tmp_path, {"w": np.ones(2, np.float32)})
    assert files == ["model.ckpt.index", "model.ckpt.data-00000-of-00001", "checkpoint"]
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@contextmanager
def raises_naming(path: Path, match: str = ""):
    """pytest.raises for a ModelportError whose one-line message names `path`."""
    with pytest.raises(ModelportError, match=match) as excinfo:
        yield
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message, message


def test_truncated_data_file(native_checkpoint, tmp_path):
    folder = copy_checkpoint(native_checkpoint, tmp_path / "ckpt")
    data = folder / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-3])
    with raises_naming(data, "truncated"):
        TF1Reader(folder)


def test_missing_data_file(native_checkpoint, tmp_path):
    folder = copy_checkpoint(native_checkpoint, tmp_path / "ckpt")
    data = folder / "model.ckpt.data-00000-of-00001"
    data.unlink()
    with raises_naming(data, "missing"):
        TF1Reader(folder)


def test_flipped_data_byte_fails_the_checksum(tmp_path):
    write_native(tmp_path, {"a": np.ones(4, np.float32), "b": np.arange(8, dtype=np.int64)})
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    content = bytearray(data.read_bytes())
    content[16 + 5] ^= 0x01  # inside b, stored after a's 16 bytes
    data.write_bytes(bytes(content))
    with TF1Reader(tmp_path) as reader:
        assert_identical(reader.read("a"), np.ones(4, np.float32))
        with raises_naming(data, "checksum mismatch for tensor b"):
            reader.read("b")


def test_flipped_index_byte_fails_the_block_checksum(native_checkpoint, tmp_path):
    folder = copy_checkpoint(native_checkpoint, tmp_path / "ckpt")
    index = folder / "model.ckpt.index"
    content = bytearray(index.read_bytes())
    content[100] ^= 0x40
    index.write_bytes(bytes(content))
    with raises_naming(index, "checksum mismatch"):
        TF1Reader(folder)


@pytest.mark.parametrize("content", [os.urandom(3000), b"model_checkpoint_path: nothing\n" * 10, b""])
def test_index_that_is_not_an_sstable(tmp_path, content):
    index = tmp_path / "model.ckpt.index"
    index.write_bytes(content)
    with raises_naming(index, "not a TF1 checkpoint index"):
        TF1Reader(tmp_path / "model.ckpt")


def test_state_file_pointing_nowhere_falls_back_to_the_single_index(native_checkpoint, tmp_path):
    folder = copy_checkpoint(native_checkpoint, tmp_path / "ckpt")
    (folder / "checkpoint").write_text('model_checkpoint_path: "/gone/model.ckpt-1000"\n')
    with TF1Reader(folder) as reader:
        assert reader.prefix == folder / "model.ckpt"


def test_two_indexes_without_a_usable_state_file(native_checkpoint, tmp_path):
    folder = copy_checkpoint(native_checkpoint, tmp_path / "ckpt")
    shutil.copy(folder / "model.ckpt.index", folder / "other.ckpt.index")
    (folder / "checkpoint").write_text('model_checkpoint_path: "missing.ckpt"\n')
    with raises_naming(folder, "several TF1 checkpoints .*model.ckpt.index.*other.ckpt.index"):
        TF1Reader(folder)


def test_folder_without_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    assert find_tf1_prefix(tmp_path) is None
    with raises_naming(tmp_path, "no TF1 checkpoint"):
        TF1Reader(tmp_path)


def save_slices(tf, prefix: Path, slices: list[tuple[str, str, np.ndarray]]) -> None:
    """What tf.compat.v1.train.Saver runs for partitioned variables: SaveV2 with a slice spec per part
    ("full shape start,length:start,length", "-" for a whole dimension)."""
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=[name for name, _, _ in slices],
                      shape_and_slices=[spec for _, spec, _ in slices],
                      tensors=[tf.constant(value) for _, _, value in slices])


def test_partitioned_variables_are_assembled_from_their_slices(tf, tmp_path):
    """Slices are found by TensorFlow's own coded keys: offsets past 63 and 8191 take longer codes."""
    rng = np.random.default_rng(0)
    vocab = rng.standard_normal((20000, 3)).astype(np.float32)
    kernel = rng.standard_normal((4, 6))
    tiles = np.arange(12, dtype=np.int64).reshape(3, 4)
    save_slices(tf, tmp_path / "model.ckpt", [
        ("bert/embeddings/word_embeddings", "20000 3 9000,11000:-", vocab[9000:]),
        ("bert/embeddings/word_embeddings", "20000 3 0,70:-", vocab[:70]),
        ("bert/embeddings/word_embeddings", "20000 3 70,8930:-", vocab[70:9000]),
        ("kernel", "4 6 -:0,2", kernel[:, :2]), ("kernel", "4 6 -:2,4", kernel[:, 2:]),
        ("tiles", "3 4 0,1:0,4", tiles[:1]), ("tiles", "3 4 1,2:0,2", tiles[1:, :2]),
        ("tiles", "3 4 1,2:2,2", tiles[1:, 2:]),
        ("plain", "", np.ones(5, np.float32)),
    ])
    expected = {"bert/embeddings/word_embeddings": vocab, "kernel": kernel, "tiles": tiles,
                "plain": np.ones(5, np.float32)}
    with TF1Reader(tmp_path) as reader:
        assert sorted(reader.names()) == sorted(expected)
        for name, value in expected.items():
            assert reader.infos[name] == TensorInfo(value.shape, value.dtype)
            assert_identical(reader.read(name), value)
            np.testing.assert_array_equal(reader.read(name), tf.train.load_checkpoint(str(tmp_path / "model.ckpt"))
                                          .get_tensor(name))
        assert not reader.read("kernel").flags.writeable


def test_a_partitioned_variable_missing_slices_is_refused(tf, tmp_path):
    prefix = tmp_path / "model.ckpt"  # the first half of a partitioned variable of shape [4]
    save_slices(tf, prefix, [("vocab", "4 0,2", np.ones(2, np.float32))])
    with raises_naming(tmp_path / "model.ckpt.index", "tensor vocab: its slices hold 2 of its 4 values"):
        TF1Reader(prefix)


def test_a_damaged_slice_fails_the_checksum(tf, tmp_path):
    save_slices(tf, tmp_path / "model.ckpt", [("vocab", "4 0,2", np.ones(2, np.float32)),
                                              ("vocab", "4 2,2", np.zeros(2, np.float32))])
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    content = bytearray(data.read_bytes())
    content[1] ^= 0x01
    data.write_bytes(bytes(content))
    with TF1Reader(tmp_path) as reader, raises_naming(data, r"checksum mismatch for tensor vocab\[[02]:[24]\]"):
        reader.read("vocab")


def test_string_metadata_is_set_aside(tf, tmp_path):
    """tf.train.Checkpoint and Keras store an object graph as a string tensor: not a weight."""
    prefix = str(tmp_path / "model.ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["_CHECKPOINTABLE_OBJECT_GRAPH", "w"], shape_and_slices=["", ""],
                      tensors=[tf.constant("graph"), tf.ones([2])])
    reader = TF1Reader(prefix)
    assert reader.names() == ["w"] and reader.extras == ["_CHECKPOINTABLE_OBJECT_GRAPH"]


def open_and_read_all(prefix: Path) -> None:
    """Either works or raises ModelportError (any other exception fails the test)."""
    try:
        with TF1Reader(prefix) as reader:
            for name in reader.names():
                reader.read(name)
    except ModelportError:
        pass


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    write_native(folder, sample_tensors(filler_count=40))
    return folder


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_index_opens_or_raises_modelport_error(small_checkpoint, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("mutated", numbered=True)
    shutil.copy(small_checkpoint / "model.ckpt.data-00000-of-00001", folder)
    content = bytearray((small_checkpoint / "model.ckpt.index").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    content = content[: data.draw(st.integers(0, len(content)))] if data.draw(st.booleans()) else content
    (folder / "model.ckpt.index").write_bytes(bytes(content))
    open_and_read_all(folder / "model.ckpt")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_protobufs_with_valid_block_checksums_open_or_raise(small_checkpoint, tmp_path_factory, data):
    """Block crcs stop most byte flips; this rebuilds the table around garbled entries to reach the protobuf parsing."""
    folder = tmp_path_factory.mktemp("garbled", numbered=True)
    shutil.copy(small_checkpoint / "model.ckpt.data-00000-of-00001", folder)
    records = tf1._read_table((small_checkpoint / "model.ckpt.index").read_bytes())
    position = data.draw(st.integers(0, len(records) - 1))
    key, value = records[position]
    value = bytearray(value)
    for _ in range(data.draw(st.integers(1, 3))):
        if value:
            value[data.draw(st.integers(0, len(value) - 1))] = data.draw(st.integers(0, 255))
    records[position] = key, bytes(value[: data.draw(st.integers(0, len(value)))]) if data.draw(st.booleans()) else bytes(value)
    (folder / "model.ckpt.index").write_bytes(tf1._build_table(records))
    open_and_read_all(folder / "model.ckpt")
