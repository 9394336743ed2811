"""The dataset is large enough for every setting that uses it (ptmech.config.require_all);
else one error naming the setting."""

from ptmech import config as ptcfg

ptcfg.require_all(snakemake.input.tsv, snakemake.wildcards.dataset, snakemake.params.needs, snakemake.output[0],
                  snakemake.log[0])
