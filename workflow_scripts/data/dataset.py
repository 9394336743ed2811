from ptmech import data, io, logs

log = logs.to_file(snakemake.log[0])
name, spec = snakemake.wildcards.dataset, snakemake.params.spec
source = snakemake.input.get("source")
table = data.normalise(name, data.read_source(name, spec, source), spec, source or spec.get("hub", ""),
                       warn=log.warning)
io.write_table(table, snakemake.output.tsv)
log.info("dataset %s: %d rows, columns %s", name, len(table), list(table.columns))
