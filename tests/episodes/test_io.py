"""Atomic writes: a full disk names the file (also when torch.save wraps the OSError) and leaves nothing."""
import errno

import pytest
import torch

from episodes.io import atomic_torch_save, atomic_write


def test_a_full_disk_names_the_destination_and_leaves_no_temp_file(tmp_path):
    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "out.bin", full)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_torch_save_on_a_full_disk_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    """torch.save turns the OSError of a write into a RuntimeError: it comes back as the OSError."""
    def full_disk_save(obj, handle):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(OSError) as raised:
        atomic_torch_save(tmp_path / "features.pt", {"x": torch.zeros(3)})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "features.pt")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through(tmp_path):
    def broken(handle):
        raise RuntimeError("not a write error")
    with pytest.raises(RuntimeError, match="not a write error"):
        atomic_write(tmp_path / "out.bin", broken)
