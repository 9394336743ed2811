"""Resources of model jobs (ptmech.resources, rules/resources.smk): the size estimate
equals the true parameter count where the weights are readable, the config estimate is
close to it, unknown models fall back to the configured default, GPU requests follow the
`resources.gpu` setting, and a local job claims a GPU nobody else holds."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import transformers
import yaml

from conftest import ARCHS, save_tiny_model
from ptmech import resources as ptres
from workflow import REPO, copy_workflow, snakemake

LLAMA_3_1_8B = {  # config.json of meta-llama/Llama-3.1-8B (8.03e9 parameters)
    "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sized")
    return {arch: save_tiny_model(arch, root / arch) for arch in ARCHS}


def true_parameters(folder) -> int:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_size_from_weights_is_the_parameter_count(tiny_models, arch):
    size = ptres.model_size(str(tiny_models[arch]))
    assert size.source == "safetensors"
    assert size.parameters == true_parameters(tiny_models[arch])


@pytest.mark.parametrize("arch", ARCHS)
def test_size_from_config_alone_is_close(tiny_models, arch, tmp_path):
    shutil.copy(tiny_models[arch] / "config.json", tmp_path / "config.json")
    size = ptres.model_size(str(tmp_path))
    assert size.source == "config"
    assert size.parameters == pytest.approx(true_parameters(tiny_models[arch]), rel=0.05)


def test_config_estimate_of_a_real_model():
    assert ptres.config_parameters(LLAMA_3_1_8B) == pytest.approx(8.03e9, rel=0.01)
    # the same model behind a multimodal wrapper's text_config
    assert ptres.config_parameters({"model_type": "x", "text_config": LLAMA_3_1_8B}) == \
        ptres.config_parameters(LLAMA_3_1_8B)


def test_size_of_a_hub_id_from_the_hub_cache(tiny_models, tmp_path):
    """A hub id is looked up in the hub cache (no network); weights there give the exact
    count, a cached config.json alone an estimate, nothing cached the default."""
    commit = "0" * 40
    snap = tmp_path / "models--org--tiny" / "snapshots" / commit
    snap.mkdir(parents=True)
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text(commit)
    shutil.copy(tiny_models["llama"] / "config.json", snap / "config.json")
    assert ptres.model_size("org/tiny", cache_dir=str(tmp_path)).source == "config"
    shutil.copy(tiny_models["llama"] / "model.safetensors", snap / "model.safetensors")
    size = ptres.model_size("org/tiny", cache_dir=str(tmp_path))
    assert (size.source, size.parameters) == ("safetensors", true_parameters(tiny_models["llama"]))
    missing = ptres.model_size("org/not-cached", cache_dir=str(tmp_path), default_parameters=7e9)
    assert (missing.source, missing.parameters) == ("default", 7_000_000_000)


def test_size_from_bin_weights(tmp_path, tiny_models):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_3_1_8B, "torch_dtype": "float32"}))
    size = ptres.model_size(str(tmp_path))
    # file size / 4 bytes: the count plus the pickle's overhead, not the 8B of the config
    assert size.source == "weights"
    assert true_parameters(tiny_models["llama"]) <= size.parameters < 1.5 * true_parameters(tiny_models["llama"])


def test_job_resources():
    s = ptres.settings({"gpu_model": "a100"})
    big = ptres.ModelSize(int(8.03e9), "config")
    cpu = ptres.job_resources({"dtype": "auto"}, big, s, use_gpu=False)
    gpu = ptres.job_resources({"dtype": "auto"}, big, s, use_gpu=True)
    assert (cpu["gpu"], cpu["gpu_model"]) == (0, "")
    assert (gpu["gpu"], gpu["gpu_model"]) == (1, "a100")
    # host memory holds the weights: float32 on the CPU, bfloat16 to move onto the GPU
    assert cpu["mem_mb"] >= 8.03e9 * 4 / 2**20 and gpu["mem_mb"] >= 8.03e9 * 2 / 2**20
    assert gpu["mem_mb"] < cpu["mem_mb"]
    assert ptres.job_resources({"dtype": "float32"}, big, s, True)["mem_mb"] > gpu["mem_mb"]
    # a retry asks for more memory and time
    retry = ptres.job_resources({}, big, s, use_gpu=True, attempt=2)
    assert (retry["mem_mb"], retry["runtime"]) == (2 * gpu["mem_mb"], 2 * gpu["runtime"])
    # a 70B model sharded with a device_map over 80 GB GPUs needs 140 GB * 1.2: 2 GPUs
    huge = ptres.ModelSize(70_000_000_000, "config")
    assert ptres.job_resources({"device_map": "auto"}, huge, s, True)["gpu"] == 2
    assert ptres.job_resources({}, huge, s, True)["gpu"] == 1
    # bigger models never get less
    small = ptres.job_resources({}, ptres.ModelSize(10**6, "x"), s, True)
    assert small["mem_mb"] <= gpu["mem_mb"] and small["runtime"] <= gpu["runtime"]


def test_job_threads():
    s = ptres.settings(None)
    assert ptres.job_threads(ptres.ModelSize(135_000_000, "config"), s) == 4
    assert ptres.job_threads(ptres.ModelSize(300_000, "safetensors"), s) == 1  # the organism
    assert ptres.job_threads(ptres.ModelSize(0, "missing"), s) == 1  # not trained yet
    s = ptres.settings({"threads": 16, "threads_min_parameters": "1e5"})
    assert ptres.job_threads(ptres.ModelSize(300_000, "safetensors"), s) == 16


def test_settings():
    assert ptres.settings(None)["gpu"] == "auto"
    assert ptres.settings({"gpu": True})["gpu"] is True
    assert ptres.settings({"gpu": "false"})["gpu"] is False
    assert ptres.settings({"default_parameters": "7e9"})["default_parameters"] == 7e9
    with pytest.raises(ptres.ResourceSettingsError, match="resources.gpu"):
        ptres.settings({"gpu": "sometimes"})
    with pytest.raises(ptres.ResourceSettingsError, match="gpus"):
        ptres.settings({"gpus": 1})


def test_use_gpus():
    assert ptres.use_gpus("auto", cluster=True, local_gpus=0)       # a SLURM run
    assert ptres.use_gpus("auto", cluster=False, local_gpus=2)      # a GPU workstation
    assert not ptres.use_gpus("auto", cluster=False, local_gpus=0)  # a laptop
    assert not ptres.use_gpus(False, cluster=True, local_gpus=4)
    assert ptres.use_gpus(True, cluster=False, local_gpus=0)


def test_local_gpu_count_follows_cuda_visible_devices():
    assert ptres.local_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1"}) == 2
    assert ptres.local_gpu_count({"CUDA_VISIBLE_DEVICES": "GPU-5f3e"}) == 1
    assert ptres.local_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert ptres.local_gpu_count({"CUDA_VISIBLE_DEVICES": "-1"}) == 0


@pytest.fixture
def release_claims():
    yield
    while ptres._CLAIMED:
        ptres._CLAIMED.pop().close()


def test_claim_gpu_gives_each_job_its_own(tmp_path, release_claims):
    envs = [{} for _ in range(3)]
    got = [ptres.claim_gpu(e, lock_dir=tmp_path, n_gpus=2, block=False) for e in envs]
    assert sorted(got[:2]) == ["0", "1"] and got[2] is None
    assert [e.get("CUDA_VISIBLE_DEVICES") for e in envs] == [got[0], got[1], None]
    ptres._CLAIMED.pop(0).close()  # the first job ends: its GPU is free again
    assert ptres.claim_gpu({}, lock_dir=tmp_path, n_gpus=2, block=False) == got[0]


def test_claim_gpu_leaves_a_scheduler_choice_alone(tmp_path, release_claims):
    for env in ({"CUDA_VISIBLE_DEVICES": "3"}, {"SLURM_JOB_ID": "17"}):
        before = dict(env)
        assert ptres.claim_gpu(env, lock_dir=tmp_path, n_gpus=4) is None
        assert env == before
    assert ptres.claim_gpu({}, lock_dir=tmp_path, n_gpus=1) is None  # nothing to choose


def switched_off_stages() -> dict:
    schema = yaml.safe_load((REPO / "config.schema.yaml").read_text())
    return {key: {"enabled": False} for key, spec in schema["properties"].items()
            if "enabled" in (spec.get("properties") or {})}


def _one_model_workflow(tmp_path, tiny_models, **extra) -> tuple:
    """A workflow copy with one tiny Llama and one statement, every analysis switched off."""
    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(tiny_models["llama"], wd / "models" / "a")
    (wd / "st.csv").write_text("statement,label\nthe city of paris is in france .,1\n")
    config = {
        "models": {"a": {"path": "models/a", "family": "f", "role": "base"}},
        "datasets": {"st": {"path": "st.csv", "kind": "statements"}},
        "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st"]}},
        **extra,
        **switched_off_stages(),
    }
    return wd, config


@pytest.mark.workflow
def test_extract_jobs_declare_model_resources(tmp_path, tiny_models, monkeypatch):
    """The dry run's extract jobs carry the resources computed from their model: no GPU on
    a machine without one, one where CUDA_VISIBLE_DEVICES shows two (resources.gpu: auto)."""
    wd, config = _one_model_workflow(tmp_path, tiny_models)
    size = ptres.model_size(str(wd / "models" / "a"))
    for visible in ("", "0,1"):
        expected = ptres.job_resources({}, size, ptres.settings(None), use_gpu=bool(visible))
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        out = snakemake(wd, "--dry-run", "results/activations/a/statements/st.h5", config=config)
        text = out.stdout + out.stderr
        line = re.search(r"resources: (.*)", text[text.index("rule extract:"):]).group(1)
        got = dict(kv.split("=", 1) for kv in line.split(", "))
        assert (int(got["gpu"]), int(got["mem_mb"]), int(got["runtime"])) == \
            (expected["gpu"], expected["mem_mb"], expected["runtime"]), (visible, line)
        assert expected["gpu"] == (1 if visible else 0)
        assert "threads:" not in text[text.index("rule extract:"):]  # a tiny model: one thread


@pytest.mark.workflow
def test_model_jobs_declare_threads(tmp_path, tiny_models):
    """Jobs that load a model big enough (here: every model, threads_min_parameters 0) get
    resources.threads, lowered to --cores; what Snakemake gives them reaches torch."""
    wd, config = _one_model_workflow(tmp_path, tiny_models,
                                     resources={"threads": 2, "threads_min_parameters": 0})
    target = "results/activations/a/statements/st.h5"
    for cores, expected in ((1, 1), (3, 2)):
        out = snakemake(wd, "--dry-run", "--cores", str(cores), target, config=config)
        text = out.stdout + out.stderr
        job = text[text.index("rule extract:"):]
        got = re.search(r"threads: (\d+)", job)
        assert int(got.group(1) if got else 1) == expected, job[:600]
    out = snakemake(wd, "--cores", "3", target, config=config)
    assert out.returncode == 0, out.stderr[-3000:]
    log = (wd / "logs" / "extract" / "a" / "statements" / "st.log").read_text()
    assert "torch threads: 2" in log, log[-2000:]
