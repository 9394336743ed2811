from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from ptmech import data, io, logs
from ptmech.refusal.candidates import candidates_from_caches

log = logs.to_file(snakemake.log[0])
inp, s = snakemake.input, snakemake.params.settings
candidates, counts = candidates_from_caches(
    inp.harmful_cache, inp.harmless_cache,
    data.load_table(inp.harmful_data), data.load_table(inp.harmless_data),
    split_fractions=s["split_fractions"], split_seed=s["split_seed"], n_train=s["n_train"],
)
with io.atomic_path(snakemake.output.candidates) as tmp, open(tmp, "wb") as f:
    candidates.save(f, **counts)
log.info("%s: candidates at k %s x positions %s from %d harmful and %d harmless train prompts",
         snakemake.wildcards.model, candidates.k, candidates.positions, counts["n_harmful"], counts["n_harmless"])
