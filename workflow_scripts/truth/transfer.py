"""2x2 probe-transfer accuracies and direction cosines of one ordered model pair."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from ptmech import io, logs
from ptmech.truth import probes as truth

log = logs.to_file(snakemake.log[0])
w, s, inp = snakemake.wildcards, snakemake.params.settings, snakemake.input
probes_a, probes_b = truth.ProbeSet.load(inp.source_probes), truth.ProbeSet.load(inp.target_probes)
caches_a = truth.open_caches(dict(zip(s["datasets"], inp.source_caches)), model=w.source)
caches_b = truth.open_caches(dict(zip(s["datasets"], inp.target_caches)), model=w.target)
try:
    truth.check_same_statements(caches_a, caches_b)
    ks = sorted(set(probes_a.layers) & set(probes_b.layers)
                & set(truth.common_layers(caches_a)) & set(truth.common_layers(caches_b)))
    log.info("%s -> %s: k=%s", w.source, w.target, ks)
    transfer, cosine = truth.probe_transfer(truth.paired_centred_layers(caches_a, caches_b, ks),
                                            truth.cache_labels(caches_a), probes_a, probes_b)
finally:
    for c in [*caches_a.values(), *caches_b.values()]:
        c.close()
names = {"a": w.source, "b": w.target}
transfer["probe_model"] = transfer["probe_model"].map(names)
transfer["eval_model"] = transfer["eval_model"].map(names)
for t in (transfer, cosine):
    t.insert(0, "target", w.target)
    t.insert(0, "source", w.source)
io.write_table(transfer, snakemake.output.transfer)
io.write_table(cosine, snakemake.output.cosine)
first = cosine[cosine["heldout"] == s["datasets"][0]]
log.info("cosine per k (held out %s): %s", s["datasets"][0], dict(zip(first["k"], first["cosine"].round(3))))
