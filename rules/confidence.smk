# Confidence: entropy neurons of the last MLP layer (METHODS.md §6). Per-model jobs compute
# each neuron's norm and LogitVar from the weights (no text is run), and, optionally, mean-
# ablate the selected neurons on a text set; cheap aggregates then select the neurons over the
# (p, n) grid, compare models by IoU and draw the figures.

include: "functions/confidence.smk"


rule confidence_neurons:
    """Norm and LogitVar of every last-layer MLP neuron, from the weights only."""
    input:
        unpack(model_input),
    output:
        tsv="results/confidence/{model}/neurons.tsv",
    params:
        model=confidence_model,
        settings=confidence_weights_settings,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/confidence_neurons/{model}.log",
    benchmark:
        "results/benchmarks/confidence_neurons/{model}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/neurons.py"


rule confidence_ablation:
    """Mean-ablate the model's entropy neurons (and random control neurons) on the text set:
    change in next-token entropy and loss, total and direct effect."""
    input:
        unpack(confidence_ablation_input),
    output:
        tsv="results/confidence/{model}/ablation.tsv",
    params:
        model=confidence_model,
        selection=confidence_default_selection,
        settings=confidence_ablation_settings,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/confidence_ablation/{model}.log",
    benchmark:
        "results/benchmarks/confidence_ablation/{model}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/ablation.py"


rule confidence_tables:
    """Per-neuron statistics of all models, their entropy neurons over the (p, n) grid and
    the IoU of every model pair."""
    input:
        unpack(confidence_all_neurons),
    output:
        neurons="results/tables/confidence_neurons.tsv",
        selected="results/tables/confidence_entropy_neurons.tsv",
        iou="results/tables/confidence_iou.tsv",
    params:
        models=model_info,
        pairs=confidence_pairs,
        selection=confidence_selection,
        premises=config["premises"],
    log:
        "logs/confidence_tables/all.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/tables.py"


rule confidence_ablation_table:
    """The ablation effects of all models in one table."""
    input:
        unpack(confidence_all_ablations),
    output:
        tsv="results/tables/confidence_ablation.tsv",
    params:
        models=model_info,
    log:
        "logs/confidence_ablation_table/all.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/ablation_table.py"


rule confidence_scatter:
    """Norm vs LogitVar of one model's last-layer neurons (Figure 1(c) style)."""
    input:
        neurons="results/confidence/{model}/neurons.tsv",
    output:
        png=report(
            "results/figures/confidence/scatter/{model}.png",
            caption="../report/confidence_scatter.rst",
            category="Confidence",
            subcategory="{model}",
        ),
    params:
        premises=config["premises"],
        selection=confidence_default_selection,
    log:
        "logs/confidence_scatter/{model}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/scatter.py"


rule confidence_venn:
    """Venn diagram of the entropy neurons of a family's 2 or 3 models (Figure 1(d))."""
    input:
        unpack(confidence_family_neurons),
    output:
        png=report(
            "results/figures/confidence/venn/{family}.png",
            caption="../report/confidence_venn.rst",
            category="Confidence",
            subcategory="{family}",
        ),
    params:
        models=confidence_family_meta,
        premises=config["premises"],
        selection=confidence_default_selection,
    wildcard_constraints:
        family="[A-Za-z0-9][A-Za-z0-9._-]*",
    log:
        "logs/confidence_venn/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/venn.py"


rule confidence_iou_figure:
    """IoU of the entropy-neuron sets of a family's model pairs over the (p, n) grid."""
    input:
        unpack(confidence_family_neurons),
    output:
        png=report(
            "results/figures/confidence/iou/{family}.png",
            caption="../report/confidence_iou.rst",
            category="Confidence",
            subcategory="{family}",
        ),
    params:
        premises=config["premises"],
        pairs=confidence_family_pairs,
        selection=confidence_selection,
    wildcard_constraints:
        family="[A-Za-z0-9][A-Za-z0-9._-]*",
    log:
        "logs/confidence_iou_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/iou_figure.py"


rule confidence_ablation_figure:
    """Entropy and loss change under mean ablation of each entropy neuron, the family's
    models side by side."""
    input:
        unpack(confidence_family_ablations),
    output:
        png=report(
            "results/figures/confidence/ablation/{family}.png",
            caption="../report/confidence_ablation.rst",
            category="Confidence",
            subcategory="{family}",
        ),
    params:
        models=confidence_family_meta,
    wildcard_constraints:
        family="[A-Za-z0-9][A-Za-z0-9._-]*",
    log:
        "logs/confidence_ablation_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/confidence/ablation_figure.py"
