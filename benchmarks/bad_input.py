"""How much work runs before each bad input that only a job can find? Each case runs real
Snakemake on a fresh copy of the workflow with tiny models and records the rule that
failed, the jobs that finished before it, the seconds from start to failure, and whether
the message names the culprit. Cases the parse catches (docs/bad-input.md) run no job at
all, so they are not here.

    python benchmarks/bad_input.py [--out benchmarks/results/bad_input.tsv]
"""

from __future__ import annotations

import argparse
import copy
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "workflow_scripts")]

from conftest import save_tiny_model  # noqa: E402
from workflow import FAMILY, snakemake, tiny_family_workflow  # noqa: E402


def statements(n_true: int, n_false: int, long: int = 0) -> str:
    rows = [f"t{i} is x .,1" for i in range(n_true)] + [f"f{i} is y .,0" for i in range(n_false)]
    rows += [" ".join(["paris"] * 300) + " .,1" for _ in range(long)]
    return "statement,label\n" + "\n".join(rows) + "\n"


BASE = {"models": copy.deepcopy(FAMILY),
        "datasets": {"st": {"path": "st.csv", "kind": "statements"}},
        "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st"]}},
        "truth": {"enabled": False}, "refusal": {"enabled": False}, "knowledge": {"enabled": False}}


def case_made_dataset_too_small(wd: Path) -> tuple[dict, str, str]:
    (wd / "results").mkdir(exist_ok=True)
    (wd / "results" / "made.csv").write_text(statements(3, 3))
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["made"] = {"path": "results/made.csv", "kind": "statements"}
    cfg["prompt_sets"]["statements"]["datasets"] = ["st", "made"]
    cfg["truth"] = {"steering": {"datasets": ["made"], "n_demos": 6}}
    return cfg, "truth.steering.n_demos: dataset 'made'", ""


def case_made_file_without_label(wd: Path) -> tuple[dict, str, str]:
    (wd / "results").mkdir(exist_ok=True)
    (wd / "results" / "made.csv").write_text("statement,truth\na b .,1\n")
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["made"] = {"path": "results/made.csv", "kind": "statements"}
    cfg["prompt_sets"]["statements"]["datasets"] = ["st", "made"]
    return cfg, "dataset 'made' (results/made.csv): missing column 'label'", ""


def case_prompt_past_context(wd: Path) -> tuple[dict, str, str]:
    save_tiny_model("gpt2", wd / "models" / "g")  # 128 learned positions
    (wd / "st.csv").write_text(statements(3, 3, long=1))
    cfg = copy.deepcopy(BASE)
    cfg["models"] = {"g": {"path": "models/g", "family": "f", "role": "base"}}
    return cfg, "model 'g': 1 of 7 prompts are longer than its context of 128 positions", ""


def case_truncated_cache(wd: Path) -> tuple[dict, str, str]:
    (wd / "st2.csv").write_text(statements(3, 3).replace("is x", "is z"))
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["st2"] = {"path": "st2.csv", "kind": "statements"}
    cfg["prompt_sets"]["statements"]["datasets"] = ["st", "st2"]
    cfg["truth"] = {"steering": {"enabled": False}}
    snakemake(wd, *(f"results/activations/{m}/statements/{d}.h5" for m in FAMILY for d in ("st", "st2")), config=cfg)
    h5 = wd / "results" / "activations" / "a" / "statements" / "st2.h5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    return cfg, "delete it and rerun snakemake", "results/truth/a/probes.tsv"


CASES = [case_made_dataset_too_small, case_made_file_without_label, case_prompt_past_context, case_truncated_cache]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bad_input.tsv"))
    args = ap.parse_args()
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            wd = tiny_family_workflow(Path(tmp) / "wf", {"st.csv": statements(3, 3)})
            cfg, needle, target = case(wd)
            start = time.perf_counter()
            proc = snakemake(wd, *([target] if target else []), config=cfg, check=False)
            seconds = time.perf_counter() - start
            text = proc.stdout + proc.stderr
            failed = re.findall(r"Error in rule (\w+):", text)
            done = len(re.findall(r"^Finished job", text, flags=re.M))
            rows.append({"case": case.__name__.removeprefix("case_"), "rc": proc.returncode,
                         "failed_rule": failed[0] if failed else "", "jobs_finished_before": done,
                         "seconds_to_failure": f"{seconds:.1f}", "message_names_culprit": needle in text})
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        f.write(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}\n")
        f.write("\t".join(rows[0]) + "\n")
        for r in rows:
            f.write("\t".join(str(v) for v in r.values()) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
