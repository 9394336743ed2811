"""The paper's truth intervention on a live target model with a source model's direction."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import numpy as np
import pandas as pd

from ptmech import adapter as ad, data, io, logs
from ptmech.truth import probes as truth, steering as st

log = logs.to_file(snakemake.log[0])
w, s, inp = snakemake.wildcards, snakemake.params.settings, snakemake.input
layers = json.loads(open(inp.layers).read())
k, steer_k = layers["probe_k"], layers["steer_k"]
vector = truth.ProbeSet.load(inp.probes).steering_vector(s["probe"], w.dataset, k)

table = data.load_table(inp.data)
demos = st.choose_demos(table, s["n_demos"], seed=s["seed"], what=f"dataset {w.dataset!r} (truth.steering.n_demos)")
rows = st.select_statements(table, demos, s["limit"])
queries = st.few_shot_queries(rows["statement"], rows.index, demos, seed=s["seed"])
labels = rows["label"].to_numpy().astype(int)
signs = st.signs_for(labels)

model = ad.load_model(w.target, snakemake.params.model, device=s["device"])
log.info("%s steered with %s's direction (k=%d, |v|=%.3f) added at k %s, offsets %s, coefficient %g: "
         "%d statements of %s, %d demos", w.target, w.source, k, np.linalg.norm(vector), steer_k, s["offsets"],
         s["coefficient"], len(rows), w.dataset, len(demos))
ids, suffix = st.encode_queries(model, queries)
kw = dict(batch_size=s["batch_size"], multi_token=s["multi_token_answers"])
base = st.p_true_false(model, ids, suffix, signs, **kw)
steered = st.p_true_false(model, ids, suffix, signs, vector=vector, ks=steer_k, offsets=s["offsets"],
                          coefficient=s["coefficient"], **kw)

out = pd.DataFrame({
    "row": rows.index, "statement": rows["statement"].to_numpy(), "label": labels, "sign": signs,
    "p_true_base": base[:, 0], "p_false_base": base[:, 1],
    "p_true_steered": steered[:, 0], "p_false_steered": steered[:, 1],
})
out["p_diff_base"] = out["p_true_base"] - out["p_false_base"]
out["p_diff_steered"] = out["p_true_steered"] - out["p_false_steered"]
io.write_table(out, snakemake.output.table)
scores = st.steering_scores(labels, out["p_diff_base"], out["p_diff_steered"])
log.info("scores:\n%s", scores.to_string(index=False))
summary = {
    "target": w.target, "source": w.source, "dataset": w.dataset, "probe": s["probe"],
    "probe_k": k, "steer_k": steer_k, "offsets": s["offsets"],
    "coefficient": s["coefficient"], "vector_norm": float(np.linalg.norm(vector)),
    "demos": [list(d) for d in demos], "n_statements": len(rows),
    "scores": scores.replace({np.nan: None}).to_dict("records"),
}
with io.atomic_path(snakemake.output.summary) as tmp:
    tmp.write_text(json.dumps(summary, indent=1, default=float))
