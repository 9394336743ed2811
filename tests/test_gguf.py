"""models.<m>.gguf: the header reader and the parse-time checks, on GGUF files written by the
gguf package itself (an independent writer). The conversion of real files is tested end to
end in test_real_models.py."""

from pathlib import Path

import gguf as gguf_package  # the test extra pulls in the gguf extra
import numpy as np
import pytest

from ptmech import config as ptcfg
from ptmech import gguf


def write_gguf(path: Path, arch: str) -> Path:
    """A GGUF file of architecture ``arch`` with key-value fields of several types (arrays of
    strings and numbers among them) and one tensor, as llama.cpp's own writer lays it out."""
    w = gguf_package.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_float32("test.scale", 0.5)
    w.add_bool("test.flag", True)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bb", "ccc"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0, -3.0])
    w.add_string("general.name", "tiny")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
def test_the_header_reader_finds_the_architecture_the_writer_wrote(tmp_path, arch):
    path = write_gguf(tmp_path / "m.gguf", arch)
    assert gguf.read_architecture(path) == arch
    reader = gguf_package.GGUFReader(str(path))  # the package's own reader agrees
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == arch


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(gguf.GGUFError, match="weights.gguf is not a GGUF file"):
        gguf.read_architecture(path)
    path.write_bytes(b"GGUF\x03\x00")  # cut short inside the header
    with pytest.raises(gguf.GGUFError, match="ends early"):
        gguf.read_architecture(path)


def spec(tmp_path: Path, file: str, path: str = "results/models/m") -> dict:
    return {"path": path, "gguf": file, "family": "f", "role": "base"}


def test_a_missing_gguf_file_fails_the_parse_naming_the_key(tmp_path):
    with pytest.raises(ptcfg.ConfigError, match=r"models\.m\.gguf: GGUF file .*nowhere\.gguf' does not exist"):
        ptcfg.check_gguf("m", spec(tmp_path, str(tmp_path / "nowhere.gguf")))


def test_the_converted_folder_must_be_one_the_workflow_writes(tmp_path):
    file = str(write_gguf(tmp_path / "m.gguf", "llama"))
    with pytest.raises(ptcfg.ConfigError, match=r"models\.m\.path: .* must be a folder under results/"):
        ptcfg.check_gguf("m", spec(tmp_path, file, path="models/m"))


@pytest.mark.parametrize("arch,needle", [("bert", "GGUF loader does not convert"),
                                         ("t5", "ptmech reads decoder-only")])
def test_an_architecture_that_cannot_be_converted_or_read_fails_the_parse(tmp_path, arch, needle):
    file = str(write_gguf(tmp_path / "m.gguf", arch))
    with pytest.raises(ptcfg.ConfigError, match=rf"models\.m\.gguf: .*holds a '{arch}' model.*{needle}"):
        ptcfg.check_gguf("m", spec(tmp_path, file))


def test_a_convertible_file_passes(tmp_path):
    ptcfg.check_gguf("m", spec(tmp_path, str(write_gguf(tmp_path / "m.gguf", "llama"))))
