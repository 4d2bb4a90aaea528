"""The restricted unpickler: plain data in, anything that could run code refused."""
import io
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from episodes import UserError
from episodes.safe_pickle import load_data_pickle


def load(data: bytes, encoding: str = "ASCII"):
    return load_data_pickle(io.BytesIO(data), "data.pkl", encoding=encoding)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_and_numpy_arrays_round_trip_in_every_protocol(protocol):
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    data = {"image_data": images, "class_dict": {"n01": [0], "n02": [1]}, b"raw": b"\x00\xff",
            "mixed": [1.5, None, True, (1, "a")], "set": {1, 2}, "frozen": frozenset("ab"),
            "buffer": bytearray(b"xy"), "scalar": np.int64(7), "floats": np.ones(3, dtype=np.float32)}
    loaded = load(pickle.dumps(data, protocol=protocol))
    assert loaded.keys() == data.keys()
    assert loaded["image_data"].dtype == np.uint8 and np.array_equal(loaded["image_data"], images)
    assert loaded["class_dict"] == data["class_dict"] and loaded[b"raw"] == b"\x00\xff"
    assert loaded["set"] == {1, 2} and loaded["frozen"] == frozenset("ab") and loaded["buffer"] == b"xy"
    assert loaded["scalar"] == 7 and loaded["floats"].dtype == np.float32


def test_pickles_written_by_numpy_1_are_read():
    # numpy 1 named its array rebuilders numpy.core.multiarray.*; the files in the wild have those names
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    data = pickle.dumps({b"data": array}, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in data
    assert np.array_equal(load(data, encoding="bytes")[b"data"], array)


def test_a_pickle_that_runs_a_command_is_refused_and_the_command_never_runs(tmp_path, malicious_pickle):
    marker = tmp_path / "pwned"
    with pytest.raises(UserError, match="not a plain data pickle.*may be malicious"):
        load(malicious_pickle(marker))
    assert not marker.exists()


class Harmless:
    pass


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",
    b"cbuiltins\n__import__\n(S'os'\ntR.",
    b"csubprocess\nPopen\n(S'true'\ntR.",
    pickle.dumps(OrderedDict(a=1)),     # harmless, but not plain data: refused all the same
    pickle.dumps(Harmless()),
], ids=["eval", "import", "subprocess", "ordered-dict", "arbitrary-class"])
def test_every_global_outside_numpy_array_rebuilding_is_refused(payload):
    with pytest.raises(UserError, match="may be malicious"):
        load(payload)


def test_codecs_encode_is_allowed_only_for_latin1_bytes():
    assert load(pickle.dumps(b"\x00\x80", protocol=2)) == b"\x00\x80"
    zlib_bomb = b"c_codecs\nencode\n(S'x'\nS'zlib'\ntR."
    with pytest.raises(UserError, match="codec 'zlib'.*may be malicious"):
        load(zlib_bomb)


@pytest.mark.parametrize("damage", [lambda data: data[: len(data) // 2], lambda data: b"\x80\x04garbage",
                                    lambda data: b""], ids=["truncated", "garbage", "empty"])
def test_truncated_or_corrupt_pickles_raise_a_user_error(damage):
    data = pickle.dumps({"image_data": np.zeros((4, 8, 8, 3), dtype=np.uint8)})
    with pytest.raises(UserError, match="data.pkl could not be read as a pickle.*truncated or corrupt"):
        load(damage(data))


def python2_pickle_of_uint8_array(key: bytes, rows: int, cols: int) -> bytes:
    """What Python 2's cPickle (protocol 2) with numpy 1 writes for {key: uint8 array}: strings
    are 8-bit `str` (SHORT_BINSTRING), not unicode, as in the CIFAR-100 python files."""
    def text(value: bytes) -> bytes:
        return b"U" + bytes([len(value)]) + value
    dtype = b"cnumpy\ndtype\n" + text(b"u1") + b"K\x00K\x01\x87R" \
        + b"(K\x03" + text(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + text(b"b") + b"\x87R"
             + b"(K\x01" + bytes([ord("K"), rows, ord("K"), cols]) + b"\x86" + dtype + b"\x89"
             + text(bytes(range(rows * cols))) + b"tb")
    return b"\x80\x02}" + text(key) + array + b"s."


def test_python2_pickles_like_cifar100_are_read_with_bytes_keys():
    data = python2_pickle_of_uint8_array(b"data", 2, 3)
    assert pickle.loads(data, encoding="bytes")[b"data"].shape == (2, 3)  # the fixture is a valid pickle
    loaded = load(data, encoding="bytes")
    assert list(loaded) == [b"data"] and loaded[b"data"].dtype == np.uint8
    assert loaded[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]
