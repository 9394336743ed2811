# The model organism (ARCHITECTURE.md "The model organism"): a synthetic world, its datasets
# in the paper's formats, and a tiny base / SFT / instruct Llama trio trained on it on the
# CPU, deterministically (fixed seed and step counts), plus a behaviour check per model.
#
# Files: results/organism/world.json, results/organism/data/{dataset}.csv and
# few_shot_samples.json, results/organism/tokenizer/, results/models/organism-{base,sft,instruct}/,
# results/organism/training/{model}.tsv (loss per step), results/organism/checks/{model}.tsv,
# results/tables/organism_checks.tsv, results/tables/organism_floors.tsv (every floor, passed or not).

include: "functions/organism.smk"


wildcard_constraints:
    organism="|".join(ORGANISM_MODELS),


rule organism_world:
    """Sample the world; write its datasets in the paper's CSV formats and its tokenizer."""
    output:
        world="results/organism/world.json",
        tokenizer=directory("results/organism/tokenizer"),
        few_shot="results/organism/data/few_shot_samples.json",
        **{name: f"results/organism/data/{name}.csv" for name in ORGANISM_DATASETS},
    params:
        seed=ORGANISM["seed"],
        world=ORGANISM["world"],
    log:
        "logs/organism_world/organism_world.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/world.py"


rule organism_base:
    """Pretrain the base model on the world's text (facts, TRUE / FALSE documents)."""
    input:
        world=rules.organism_world.output.world,
        tokenizer=rules.organism_world.output.tokenizer,
    output:
        model=directory("results/models/organism-base"),
        history="results/organism/training/organism-base.tsv",
    params:
        stage="pretrain",
        seed=ORGANISM["seed"],
        threads=ORGANISM["threads"],
        model=ORGANISM["model"],
        recipe=ORGANISM["pretrain"],
    threads: ORGANISM["threads"]
    priority: 50  # the trio is the critical path: train before analysing
    log:
        "logs/organism_base/organism-base.log",
    benchmark:
        "results/benchmarks/organism_base.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/train.py"


rule organism_sft:
    """Fine-tune the base model on chats: answer questions, refuse harmful requests."""
    input:
        world=rules.organism_world.output.world,
        model=rules.organism_base.output.model,
    output:
        model=directory("results/models/organism-sft"),
        history="results/organism/training/organism-sft.tsv",
    params:
        stage="sft",
        seed=ORGANISM["seed"],
        threads=ORGANISM["threads"],
        recipe=ORGANISM["sft"],
    threads: ORGANISM["threads"]
    priority: 50  # the trio is the critical path: train before analysing
    log:
        "logs/organism_sft/organism-sft.log",
    benchmark:
        "results/benchmarks/organism_sft.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/train.py"


rule organism_instruct:
    """Tune the SFT model further: more varied refusals and a preference (DPO) loss."""
    input:
        world=rules.organism_world.output.world,
        model=rules.organism_sft.output.model,
    output:
        model=directory("results/models/organism-instruct"),
        history="results/organism/training/organism-instruct.tsv",
    params:
        stage="instruct",
        seed=ORGANISM["seed"],
        threads=ORGANISM["threads"],
        recipe=ORGANISM["instruct"],
    threads: ORGANISM["threads"]
    priority: 50  # the trio is the critical path: train before analysing
    log:
        "logs/organism_instruct/organism-instruct.log",
    benchmark:
        "results/benchmarks/organism_instruct.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/train.py"


rule organism_check:
    """Behaviour of one organism model: fact recall, few-shot TRUE / FALSE accuracy on
    held-out statements, refusal rates on held-out harmful and harmless requests."""
    input:
        model="results/models/{organism}",
        world=rules.organism_world.output.world,
        few_shot=rules.organism_world.output.few_shot,
        **{name: f"results/organism/data/{name}.csv" for name in ORGANISM_DATASETS},
    output:
        tsv="results/organism/checks/{organism}.tsv",
    params:
        threads=ORGANISM["threads"],
        checks=ORGANISM["checks"],
    threads: ORGANISM["threads"]
    priority: 50  # a model that misses its floors fails the run before it is analysed
    log:
        "logs/organism_check/{organism}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/check.py"


rule organism_checks_table:
    """One tidy table of every organism model's checks (model, metric, value, n)."""
    input:
        checks=expand("results/organism/checks/{organism}.tsv", organism=ORGANISM_MODELS),
    output:
        tsv="results/tables/organism_checks.tsv",
    log:
        "logs/organism_checks_table/organism_checks_table.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/checks_table.py"


rule organism_floors:
    """The organism against every floor (ptmech.organism.floors): behaviour, the base
    model's best-layer truth probe, the instruct model's own refusal direction. A missed
    floor fails the run, naming the model and the floor (organism.checks.floors: false
    keeps the run going and only records it here)."""
    input:
        unpack(organism_floors_input),
    output:
        tsv="results/tables/organism_floors.tsv",
    params:
        enforce=ORGANISM["checks"]["floors"],
    log:
        "logs/organism_floors/organism_floors.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/organism/floors.py"
