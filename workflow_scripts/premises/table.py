"""The run's unmet premises, gathered from the tables' premise columns."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import io, logs, premises

log = logs.to_file(snakemake.log[0])
tables = {name: (stage, pd.read_csv(snakemake.input[name], sep="\t", keep_default_na=False), keys)
          for name, (stage, keys) in snakemake.params.tables.items() if name in snakemake.input.keys()}
table = premises.unmet(tables)
io.write_table(table, snakemake.output.table)
for row in table.itertuples():
    log.warning("%s (%s): %s: %s", row.table, row.stage, row.rows, row.premise)
log.info("%d unmet premises in %d tables", len(table), len(tables))
