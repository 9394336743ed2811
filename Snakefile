# ptmech: what did post-training change inside this model?
# A reproduction and generalisation of "How Post-Training Reshapes LLMs" (Du et al., 2504.02904).

from snakemake.utils import min_version

min_version("9.0")


# The default config is the organism run. A --configfile replaces it rather than being
# merged into it (Snakemake merges by default, which would mix the organism's models
# into, say, configs/paper.yaml).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/resources.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/activations.smk"
include: "rules/organism.smk"
include: "rules/truth.smk"
include: "rules/refusal.smk"
include: "rules/knowledge.smk"
include: "rules/confidence.smk"
include: "rules/premises.smk"


rule all:
    input:
        PLAN.all_outputs(),
    default_target: True
