# Premises (ptmech.premises): the tables whose rows carry a `premise` column, gathered into
# one table of what is not met, the first entry of the report.


rule premises:
    """Every unmet premise of the run's tables, one row per (table, reason)."""
    input:
        **PLAN.premise_tables(),
    output:
        table=report(
            "results/tables/premises.tsv",
            caption="../report/premises.rst",
            category="0. Premises not met",
        ),
    params:
        tables=ptplan.PREMISE_TABLES,
    log:
        "logs/premises/premises.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/premises/table.py"
