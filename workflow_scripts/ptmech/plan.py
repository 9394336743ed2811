"""The plan: what each stage runs over, worked out from the config alone.

Families and roles, ordered and unordered model pairs, the combinations of models, pairs and
datasets each stage runs over, every stage's on/off switch, the checks between config keys
(each error names its key), the paths of every file one rule hands the next, and the inputs
and settings each rule gets. The ``.smk`` files only ask it: an input function there is one
to three lines. Pure Python on the validated config (schema defaults filled in): no
Snakemake, no torch, so it is unit-tested directly (tests/test_plan.py).

Conventions:

* ``ordered_pairs()`` are (source, target): ``pairs`` from the config, else every ordered
  pair of distinct models of one family.
* ``unordered_pairs()`` are those pairs once each, the base model first (else the earlier
  in config order): the order of every symmetric table (cosines, IoU, probe transfer).
* Every path that names two models names the source first: ``.../{source}/{target}...``.
* Layers are residual indices k (0 = embeddings, k = l + 1 = output of block l).
"""

from __future__ import annotations

from pathlib import Path

from . import config as ptcfg
from .knowledge import pairs as statement_pairs
from .organism import floors as organism_floors, recipe, world as organism_world


class PlanError(ValueError):
    """A config that no stage can run as written; the message starts with the culprit key."""


# --- paths: one template per file that one rule writes and another reads ------------------

PATHS = {
    "data": "results/data/{dataset}.tsv",
    "sized": "results/data/{dataset}.sized",
    "cache": "results/activations/{model}/{prompt_set}/{dataset}.h5",
    "truth_probes": "results/truth/{model}/probes.tsv",
    "truth_probes_npz": "results/truth/{model}/probes.npz",
    "truth_layers": "results/truth/families/{family}/layers.json",
    "truth_transfer": "results/truth/pairs/{source}/{target}/transfer.tsv",
    "truth_cosine": "results/truth/pairs/{source}/{target}/cosine.tsv",
    "truth_steering": "results/truth/steering/{source}/{target}/{dataset}.tsv",
    "truth_steering_summary": "results/truth/steering/{source}/{target}/{dataset}.json",
    "refusal_candidates": "results/refusal/{model}/candidates.npz",
    "refusal_direction": "results/refusal/{model}/direction.npz",
    "refusal_meta": "results/refusal/{model}/direction.json",
    "refusal_selection": "results/refusal/{model}/selection.tsv",
    "refusal_baseline": "results/refusal/baseline/{model}.tsv",
    "refusal_steering": "results/refusal/steering/{source}/{target}.tsv",
    "knowledge_pairs": "results/knowledge/pairs/{family}/{dataset}.json",
    "knowledge_sources": "results/knowledge/sources/{model}/{dataset}.h5",
    "knowledge_patching": "results/knowledge/patching/{source}/{target}/{dataset}.h5",
    "confidence_neurons": "results/confidence/{model}/neurons.tsv",
    "confidence_ablation": "results/confidence/{model}/ablation.tsv",
    "table": "results/tables/{name}.tsv",
}


def path(kind: str, **fields) -> str:
    """The file ``PATHS[kind]`` for these wildcards."""
    return PATHS[kind].format(**fields)


def table(name: str) -> str:
    return path("table", name=name)


ORGANISM_MODELS = (organism_floors.BASE, organism_floors.SFT, organism_floors.INSTRUCT)
ORGANISM_DATASETS = organism_world.STATEMENT_DATASETS + organism_world.INSTRUCTION_DATASETS

PREMISE_TABLES = {  # table -> (stage, key columns naming the rows)
    "refusal_scores": ("refusal", ["target", "source", "operation"]),
    "refusal_selection": ("refusal", ["model"]),
    "knowledge_baselines": ("knowledge", ["dataset", "source", "target"]),
    "confidence_entropy_neurons": ("confidence", ["model"]),  # each (p, n) of the grid is in the table
}


class Plan:
    """The plan of one validated config. ``local_datasets`` (name -> normalised table, or
    None where not read) are the local datasets the parse read, for the size checks and the
    knowledge skeletons; ``warn`` gets the notes about stages skipped."""

    def __init__(self, config: dict, local_datasets: dict | None = None, warn=print):
        self.config = config
        self.models = list(config["models"])
        self.prompt_sets = config["prompt_sets"]
        self.local_datasets = local_datasets or {}
        self.needs: dict[str, list[dict]] = {}  # dataset -> what the stages need of it
        self.warn = warn
        self.truth = TruthPlan(self)
        self.refusal = RefusalPlan(self)
        self.knowledge = KnowledgePlan(self)
        self.confidence = ConfidencePlan(self)
        self.organism = OrganismPlan(self)
        self.stages = [self.truth, self.refusal, self.knowledge, self.confidence, self.organism]
        for stage in self.stages:
            stage.check()

    # --- models, families, pairs ---

    def spec(self, model: str) -> dict:
        return self.config["models"][model]

    def family_of(self, model: str) -> str:
        return self.spec(model)["family"]

    def role_of(self, model: str) -> str:
        return self.spec(model)["role"]

    def families(self) -> dict[str, list[str]]:
        """family -> its models, in config order (families in order of their first model)."""
        out: dict[str, list[str]] = {}
        for m in self.models:
            out.setdefault(self.family_of(m), []).append(m)
        return out

    def family_base(self, family: str) -> str:
        """The family's base model (the first with role base), else its first model."""
        members = self.families()[family]
        return ([m for m in members if self.role_of(m) == "base"] or members)[0]

    def model_info(self, models=None) -> dict[str, dict]:
        """model -> {family, role}, for the tables that label their rows."""
        return {m: {"family": self.family_of(m), "role": self.role_of(m)} for m in (models or self.models)}

    def ordered_pairs(self) -> list[tuple[str, str]]:
        return ptcfg.model_pairs(self.config)

    def unordered_pairs(self) -> list[tuple[str, str]]:
        """Each pair once, the base model first (else the earlier in config order)."""
        out = []
        for a, b in self.ordered_pairs():
            ra, rb = self.role_of(a) == "base", self.role_of(b) == "base"
            first_a = ra if ra != rb else self.models.index(a) < self.models.index(b)
            pair = (a, b) if first_a else (b, a)
            if pair not in out:
                out.append(pair)
        return out

    def family_pairs(self, family: str) -> list[tuple[str, str]]:
        """The unordered pairs within one family."""
        members = set(self.families()[family])
        return [p for p in self.unordered_pairs() if set(p) <= members]

    def direction(self, source: str, target: str) -> str:
        """single (a model on itself), forward, backward or lateral."""
        return "single" if source == target else ptcfg.direction(self.config, source, target)

    def pair_info(self) -> list[dict]:
        """The direction of both orders of every pair, sorted (a lookup for the tables)."""
        ordered = {p for a, b in self.ordered_pairs() for p in ((a, b), (b, a))}
        return [{"source": a, "target": b, "direction": self.direction(a, b)} for a, b in sorted(ordered)]

    def self_and_pairs(self, within_family: bool = False) -> list[tuple[str, str]]:
        """(source, target): every model on itself, then each ordered pair (within one
        family only, if asked)."""
        pairs = [(a, b) for a, b in self.ordered_pairs()
                 if not within_family or self.family_of(a) == self.family_of(b)]
        return [(m, m) for m in self.models] + pairs

    # --- models as jobs load them, datasets, caches ---

    def model_folder(self, model: str) -> dict:
        """The model's local folder as an input (so a rule that makes it runs first), or
        nothing for a hub id."""
        folder = self.spec(model)["path"]
        return {"model": folder} if ptcfg.is_local_path(folder) else {}

    def model_spec(self, model: str, **override) -> dict:
        """The part of the model's entry that changes what a job computes with it."""
        return {**ptcfg.extraction_model_spec(self.config, model), **override}

    def cache(self, model: str, prompt_set: str, dataset: str) -> str:
        return path("cache", model=model, prompt_set=prompt_set, dataset=dataset)

    def all_caches(self) -> list[str]:
        return [self.cache(m, ps, ds) for m in self.models
                for ps, spec in self.prompt_sets.items() for ds in spec["datasets"]]

    def extraction_settings(self, model: str) -> dict:
        settings = dict(self.config.get("extraction", {}))
        if self.spec(model).get("batch_size"):
            settings["batch_size"] = self.spec(model)["batch_size"]
        return settings

    def require_rows(self, dataset: str, key: str, **need) -> None:
        """Record that setting ``key`` needs rows of ``dataset``; a local dataset that is too
        small fails now, naming the key."""
        self.needs.setdefault(dataset, []).append({"key": key, **need})
        try:
            ptcfg.require_rows(self.local_datasets, dataset, key, **need)
        except ptcfg.ConfigError as e:
            raise PlanError(str(e)) from None

    def needs_sizing(self, dataset: str) -> bool:
        """A dataset a stage needs rows of that the parse could not read (made by a rule, or
        from the hub): rule dataset_sized checks it before anything expensive reads it."""
        return dataset in self.needs and dataset not in self.local_datasets

    # --- outputs ---

    def stage_outputs(self) -> list[str]:
        return [out for stage in self.stages for out in stage.outputs()]

    def premise_tables(self) -> dict[str, str]:
        """The stage tables with a premise column that this config makes: name -> file."""
        made = set(self.stage_outputs())
        return {name: table(name) for name in PREMISE_TABLES if table(name) in made}

    def premises_outputs(self) -> list[str]:
        return [table("premises")] if self.premise_tables() else []

    def all_outputs(self) -> list[str]:
        return self.all_caches() + self.stage_outputs() + self.premises_outputs()


class _Stage:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = plan.config

    def check(self) -> None:
        pass

    def _cached_datasets(self, stage: str, kind: str) -> list[str]:
        """The datasets of the stage's prompt set (``<stage>.prompt_set``), once it is
        defined and of ``kind``."""
        ps, sets = self.prompt_set, self.plan.prompt_sets
        if ps not in sets:
            raise PlanError(f"{stage}.prompt_set: prompt set {ps!r} is not defined under prompt_sets "
                            f"(defined: {', '.join(sets) or 'none'}); set {stage}.enabled: false to skip this stage")
        if sets[ps]["kind"] != kind:
            raise PlanError(f"{stage}.prompt_set: prompt set {ps!r} is of kind {sets[ps]['kind']!r}, not {kind}")
        return sets[ps]["datasets"]

    def _require_cached(self, key: str, names, cached: list[str]) -> None:
        """Each of ``names`` (setting ``key``) is a dataset of the stage's prompt set."""
        for ds in names:
            if ds not in cached:
                raise PlanError(f"{key}: dataset {ds!r} is not one of prompt_sets.{self.prompt_set}.datasets "
                                f"({', '.join(cached)})")

    def outputs(self) -> list[str]:
        return []


def _missing(key: str, kind: str, name: str, defined) -> PlanError:
    return PlanError(f"{key}: {kind} {name!r} is not defined under {kind}s (defined: {', '.join(defined) or 'none'})")


class TruthPlan(_Stage):
    """Probes per model, the family's layers, transfer and cosines per pair, PCA, steering."""

    def __init__(self, plan):
        super().__init__(plan)
        self.s = self.config["truth"]
        self.steering = self.s["steering"]
        self.prompt_set = self.s["prompt_set"]
        self.active = self._active()

    def _active(self) -> bool:
        """With truth.datasets left to its default, a config whose prompt set is missing or
        holds fewer than two statement datasets (nothing to hold out) skips the stage with a
        note; explicit settings are checked."""
        if not self.s["enabled"]:
            return False
        if self.s["datasets"] is None and len(self.plan.prompt_sets.get(self.prompt_set, {}).get("datasets", [])) < 2:
            self.plan.warn(f"truth: skipped (prompt set {self.prompt_set!r} does not hold two statement datasets "
                           f"to hold out in turn; set truth.datasets, or truth.enabled: false)")
            return False
        return True

    def check(self):
        if not self.active:
            return
        cached = self._cached_datasets("truth", "statements")
        self._require_cached("truth.datasets", self.datasets(), cached)
        self._require_cached("truth.train_datasets", self.train_datasets(), cached)
        for key, names in (("truth.steering.datasets", self.steering_datasets()), ("truth.pca_dataset", [self.pca_dataset()])):
            for ds in names:
                if ds not in self.datasets():
                    raise PlanError(f"{key}: dataset {ds!r} must be one of truth.datasets "
                                    f"({', '.join(self.datasets())}), so that its direction is trained without it")
        if self.s["direction_probe"] not in self.s["probes"]:
            raise PlanError(f"truth.direction_probe: {self.s['direction_probe']!r} is not one of "
                            f"truth.probes {self.s['probes']}")
        for ds in self.datasets():
            if not [d for d in self.train_datasets() if d != ds]:
                raise PlanError(f"truth.train_datasets: held out, dataset {ds!r} leaves no dataset to train the "
                                f"probes on ({', '.join(self.train_datasets())}); add training datasets")
        for ds in self.all_datasets():
            self.plan.require_rows(ds, "truth.datasets", true=1, false=1, why="a truth probe trained or tested on it")
        if self.steering["enabled"]:
            n = self.steering["n_demos"]
            for ds in self.steering_datasets():
                self.plan.require_rows(ds, "truth.steering.n_demos", true=(n + 1) // 2, false=n // 2, total=n + 1,
                                       why=f"{n} demonstrations and a statement left to steer")

    # --- what it runs over ---

    def datasets(self) -> list[str]:
        """The held-out datasets (each tested with probes trained without it)."""
        return self.s["datasets"] or list(self.plan.prompt_sets.get(self.prompt_set, {}).get("datasets", []))

    def train_datasets(self) -> list[str]:
        return self.s["train_datasets"] or self.datasets()

    def all_datasets(self) -> list[str]:
        """Held-out datasets first, then training-only ones: the order of a probe job's caches."""
        return self.datasets() + [d for d in self.train_datasets() if d not in self.datasets()]

    def steering_datasets(self) -> list[str]:
        if self.steering["datasets"]:
            return self.steering["datasets"]
        names = self.datasets()
        return ["cities"] if "cities" in names else names[:1]

    def pca_dataset(self) -> str:
        return self.s["pca_dataset"] or self.steering_datasets()[0]

    def steering_combinations(self) -> list[tuple[str, str]]:
        """(direction source, target): every model on itself, and each ordered pair (so
        every pair gives the paper's four conditions)."""
        return self.plan.self_and_pairs()

    def layers_path(self, model: str) -> str:
        return path("truth_layers", family=self.plan.family_of(model))

    # --- inputs and settings of its rules ---

    def _caches(self, model: str, datasets) -> list[str]:
        return [self.plan.cache(model, self.prompt_set, ds) for ds in datasets]

    def probe_input(self, model: str) -> dict:
        return {"caches": self._caches(model, self.all_datasets())}

    def probe_settings(self) -> dict:
        return {"datasets": self.datasets(), "train_datasets": self.train_datasets(),
                "cache_datasets": self.all_datasets(),
                **{k: self.s[k] for k in ("probes", "lr_probe", "mm_probe")}}

    def layers_input(self, family: str) -> dict:
        base = self.plan.family_base(family)
        return {"table": path("truth_probes", model=base), "probes": path("truth_probes_npz", model=base)}

    def layers_settings(self, family: str) -> dict:
        base = self.plan.family_base(family)
        layers = self.plan.spec(base).get("layers", {})
        return {"family": family, "model": base, "probe": self.s["direction_probe"],
                "probe_k": layers.get("truth_probe"), "intervene_k": layers.get("truth_intervene"),
                "intervene_fraction": self.s["intervene_fraction"]}

    def pair_input(self, source: str, target: str) -> dict:
        return {"source_probes": path("truth_probes_npz", model=source),
                "target_probes": path("truth_probes_npz", model=target),
                "source_caches": self._caches(source, self.datasets()),
                "target_caches": self._caches(target, self.datasets())}

    def pair_settings(self) -> dict:
        return {"datasets": self.datasets()}

    def pca_input(self, source: str, target: str) -> dict:
        ds = [self.pca_dataset()]
        return {"source_cache": self._caches(source, ds)[0], "target_cache": self._caches(target, ds)[0],
                "source_probes": path("truth_probes_npz", model=source),
                "target_probes": path("truth_probes_npz", model=target),
                "layers": self.layers_path(target)}

    def pca_settings(self) -> dict:
        return {"dataset": self.pca_dataset(), "probe": self.s["direction_probe"]}

    def steer_input(self, source: str, target: str, dataset: str) -> dict:
        return {"data": path("data", dataset=dataset), "probes": path("truth_probes_npz", model=source),
                "layers": self.layers_path(target), **self.plan.model_folder(target)}

    def steer_settings(self) -> dict:
        return {"probe": self.s["direction_probe"],
                **{k: v for k, v in self.steering.items() if k not in ("enabled", "datasets")}}

    def _steering_cells(self):
        return [(s, t, ds) for s, t in self.steering_combinations() for ds in self.steering_datasets()]

    def tables_input(self) -> dict:
        pairs = self.plan.unordered_pairs()
        return {"probes": [path("truth_probes", model=m) for m in self.plan.models],
                "layers": [path("truth_layers", family=f) for f in self.plan.families()],
                "transfer": [path("truth_transfer", source=a, target=b) for a, b in pairs],
                "cosine": [path("truth_cosine", source=a, target=b) for a, b in pairs]}

    def steering_input(self) -> dict:
        cells = self._steering_cells()
        return {"tables": [path("truth_steering", source=s, target=t, dataset=ds) for s, t, ds in cells],
                "summaries": [path("truth_steering_summary", source=s, target=t, dataset=ds) for s, t, ds in cells]}

    def outputs(self) -> list[str]:
        if not self.active:
            return []
        families = self.plan.families()
        outs = [table(f"truth_{t}") for t in ("probe_accuracy", "layers", "transfer", "cosine")]
        outs += [f"results/figures/truth/accuracy/{f}.png" for f in families]
        outs += [f"results/figures/truth/cosine/{f}.png" for f in families if self.plan.family_pairs(f)]
        for a, b in self.plan.unordered_pairs():
            outs += [f"results/figures/truth/transfer/{a}~{b}.png", f"results/figures/truth/pca/{a}~{b}.png"]
        if self.steering["enabled"]:
            outs.append(table("truth_steering"))
            outs += [f"results/figures/truth/steering/{f}.png" for f in families]
        return outs


class RefusalPlan(_Stage):
    """Candidates per model, selection, generation with ablation and addition, transfer."""

    def __init__(self, plan):
        super().__init__(plan)
        self.s = self.config["refusal"]
        self.prompt_set = self.s["prompt_set"]
        # on when enabled and the config has an instruction prompt set at all (a config for
        # other stages only skips it rather than failing)
        self.active = self.s["enabled"] and any(ps["kind"] == "instructions" for ps in plan.prompt_sets.values())

    def check(self):
        if not self.active:
            return
        cached = self._cached_datasets("refusal", "instructions")
        for key in ("harmful", "harmless"):
            ds = self.s[key]
            self._require_cached(f"refusal.{key}", [ds], cached)
            self.plan.require_rows(ds, f"refusal.{key}",
                                   why="directions (train), selection (val) and generation scores (test)",
                                   splits={"fractions": self.s["split_fractions"], "seed": self.s["split_seed"]})
        for m in self.s["models"]:
            if m not in self.config["models"]:
                raise _missing("refusal.models", "model", m, self.plan.models)

    def combinations(self) -> list[tuple[str, str]]:
        """(direction source, target): every model's own direction on itself, and each
        ordered pair's source direction on its target."""
        return self.plan.self_and_pairs()

    def knobs(self, model: str) -> dict:
        """The model's configured cell and coefficient: k from models.<m>.layers.refusal,
        position and coefficient from refusal.models.<m>."""
        own = self.s["models"].get(model, {})
        return {"k": self.plan.spec(model).get("layers", {}).get("refusal"), "position": own.get("position"),
                "coefficient": own.get("coefficient", self.s["addition"]["coefficient"])}

    def _data(self) -> dict:
        return {f"{key}_data": path("data", dataset=self.s[key]) for key in ("harmful", "harmless")}

    def _caches(self, model: str) -> dict:
        return {f"{key}_cache": self.plan.cache(model, self.prompt_set, self.s[key]) for key in ("harmful", "harmless")}

    def _splits(self) -> dict:
        return {"split_fractions": self.s["split_fractions"], "split_seed": self.s["split_seed"]}

    def candidates_input(self, model: str) -> dict:
        return {**self._caches(model), **self._data()}

    def candidates_settings(self) -> dict:
        return {"n_train": self.s["n_train"], **self._splits()}

    def live_input(self, model: str) -> dict:
        """The data tables and, for a local model, its folder."""
        return {**self._data(), **self.plan.model_folder(model)}

    def select_input(self, model: str) -> dict:
        return {"candidates": path("refusal_candidates", model=model), **self.live_input(model)}

    def _scoring_settings(self) -> dict:
        return {**{k: self.s[k] for k in ("prefixes", "refusal_tokens", "batch_size")},
                "device": self.config.get("extraction", {}).get("device", "auto"), **self._splits()}

    def select_settings(self, model: str) -> dict:
        knobs = self.knobs(model)
        return {**self._scoring_settings(), "selection": self.s["selection"], "k": knobs["k"],
                "position": knobs["position"],
                "addition": {**{k: v for k, v in self.s["addition"].items() if k != "sweep"},
                             "coefficient": knobs["coefficient"]},
                "n_val": self.s["n_val"]}

    def generation_settings(self) -> dict:
        return {**self._scoring_settings(), "generation": self.s["generation"], "n_test": self.s["n_test"]}

    def steer_input(self, source: str, target: str) -> dict:
        return {"source_direction": path("refusal_direction", model=source),
                "target_direction": path("refusal_meta", model=target), **self.live_input(target)}

    def steer_settings(self, target: str) -> dict:
        return {**self.generation_settings(),
                "addition": {**self.s["addition"], "coefficient": self.knobs(target)["coefficient"]}}

    def tables_input(self) -> dict:
        models = self.plan.models
        return {"candidates": [path("refusal_candidates", model=m) for m in models],
                "directions": [path("refusal_direction", model=m) for m in models],
                "metas": [path("refusal_meta", model=m) for m in models],
                "selections": [path("refusal_selection", model=m) for m in models],
                "baselines": [path("refusal_baseline", model=m) for m in models],
                "steering": [path("refusal_steering", source=s, target=t) for s, t in self.combinations()]}

    def pca_input(self, model: str) -> dict:
        family = self.plan.families()[self.plan.family_of(model)]
        return {**self._caches(model), "meta": path("refusal_meta", model=model),
                "directions": [path("refusal_direction", model=m) for m in family], **self._data()}

    def pca_settings(self) -> dict:
        return {"n_test": self.s["n_test"], **self._splits()}

    def outputs(self) -> list[str]:
        if not self.active:
            return []
        families = self.plan.families()
        outs = [table(f"refusal_{t}") for t in ("scores", "selection", "cosine")]
        outs += [f"results/figures/refusal/scores/{f}.png" for f in families]
        outs += [f"results/figures/refusal/cosine/{f}.png" for f, ms in families.items() if len(ms) > 1]
        outs += [f"results/figures/refusal/pca/{m}.png" for m in self.plan.models]
        return outs


class KnowledgePlan(_Stage):
    """Pairs per family, source activations per model, patching per (source, target)."""

    def __init__(self, plan):
        super().__init__(plan)
        self.s = self.config["knowledge"]

    def datasets(self) -> list[str]:
        """knowledge.datasets, else every statements dataset with a skeleton."""
        if not self.s["enabled"]:
            return []
        if self.s["datasets"] is not None:
            return list(self.s["datasets"])
        return [name for name, spec in self.config["datasets"].items()
                if spec["kind"] == "statements"
                and (name in self.s["skeletons"] or name in statement_pairs.DEFAULT_SKELETONS)]

    @property
    def active(self) -> bool:
        return bool(self.datasets())

    def check(self):
        datasets = self.config["datasets"]
        for ds in self.datasets():
            if ds not in datasets:
                raise _missing("knowledge.datasets", "dataset", ds, datasets)
            if datasets[ds]["kind"] != "statements":
                raise PlanError(f"knowledge.datasets: dataset {ds!r} is of kind {datasets[ds]['kind']!r}, not statements")
            try:
                skeletons = statement_pairs.skeletons_for(ds, self.s["skeletons"])
            except statement_pairs.PairsError as e:
                raise PlanError(str(e)) from None
            if self.plan.local_datasets.get(ds) is not None:
                try:
                    statement_pairs.require_match(ds, self.plan.local_datasets[ds]["statement"].tolist(), skeletons)
                except statement_pairs.PairsError as e:
                    raise PlanError(f"knowledge.skeletons.{ds}: {e}") from None
            question = self.s["queries"].get(ds, self.s["query"]) == "question"  # completions show no FALSE demo
            self.plan.require_rows(ds, "knowledge.n_true_demos", true=self.s["n_true_demos"] + 1,
                                   false=(self.s["n_false_demos"] if question else 0) + 1,
                                   why="a pair (one true, one false) and demonstrations other than the pair "
                                       "(knowledge.n_true_demos, knowledge.n_false_demos)")
        for key in ("skeletons", "queries"):
            for ds in self.s[key]:
                if ds not in datasets:
                    raise PlanError(f"knowledge.{key}: dataset {ds!r} is not defined under datasets")
        if self.s["enabled"] and not self.datasets():
            self.plan.warn("knowledge: skipped (no statements dataset has a skeleton; "
                           "set knowledge.datasets and knowledge.skeletons)")

    def combinations(self) -> list[tuple[str, str]]:
        """(source, target): every model on itself, then each ordered pair within one family
        (cross-model patching needs a shared tokenizer)."""
        return self.plan.self_and_pairs(within_family=True)

    def tokenizer_model(self, family: str) -> str:
        """The model whose tokenizer makes the family's pairs: its first (the others are
        checked against it when they are loaded)."""
        return self.plan.families()[family][0]

    def model(self, model: str) -> dict:
        return self.plan.model_spec(model, family=self.plan.family_of(model))

    def pairs_input(self, family: str, dataset: str) -> dict:
        return {"data": path("data", dataset=dataset), **self.plan.model_folder(self.tokenizer_model(family))}

    def pairs_tokenizer(self, family: str) -> dict:
        name = self.tokenizer_model(family)
        spec = self.plan.spec(name)
        return {"model": name, **{k: spec[k] for k in ("path", "revision") if k in spec}}

    def pairs_settings(self, dataset: str) -> dict:
        return {"skeletons": statement_pairs.skeletons_for(dataset, self.s["skeletons"]),
                "query": self.s["queries"].get(dataset, self.s["query"]),
                **{k: self.s[k] for k in ("pair_by", "reuse_unique_false", "max_pairs", "n_true_demos",
                                          "n_false_demos", "seed")}}

    def sources_input(self, model: str, dataset: str) -> dict:
        return {"pairs": path("knowledge_pairs", family=self.plan.family_of(model), dataset=dataset),
                **self.plan.model_folder(model)}

    def sources_settings(self) -> dict:
        return {k: self.s[k] for k in ("batch_size", "storage_dtype", "device", "multi_token_answers")}

    def patch_input(self, source: str, target: str, dataset: str) -> dict:
        return {"sources": path("knowledge_sources", model=source, dataset=dataset),
                "pairs": path("knowledge_pairs", family=self.plan.family_of(target), dataset=dataset),
                **self.plan.model_folder(target)}

    def patch_settings(self, source: str, target: str) -> dict:
        return {"source": source, "direction": self.plan.direction(source, target),
                **{k: self.s[k] for k in ("batch_size", "reuse_clean_run", "device", "multi_token_answers")}}

    def tables_input(self) -> dict:
        return {"patching": [path("knowledge_patching", source=s, target=t, dataset=ds)
                             for s, t in self.combinations() for ds in self.datasets()]}

    def tables_settings(self) -> dict:
        return {"bins": self.s["bins"]}

    def outputs(self) -> list[str]:
        datasets = self.datasets()
        if not datasets:
            return []
        outs = [table(f"knowledge_{t}") for t in ("heatmaps", "differences", "baselines")]
        for family in self.plan.families():
            for ds in datasets:
                outs += [f"results/figures/knowledge/{family}/{ds}_{kind}.png"
                         for kind in ("heatmaps", "heatmaps_raw", "differences")]
        return outs


class ConfidencePlan(_Stage):
    """Entropy neurons per model from the weights, IoU per pair, optional mean-ablation."""

    def __init__(self, plan):
        super().__init__(plan)
        self.s = self.config["confidence"]
        self.ablation = self.s["ablation"]
        self.active = self.s["enabled"]

    def check(self):
        if not self.active:
            return
        for ds in self.ablation["datasets"]:
            if ds not in self.config["datasets"]:
                raise _missing("confidence.ablation.datasets", "dataset", ds, self.config["datasets"])

    def model(self, model: str) -> dict:
        """The model entry as loaded, in the stage's dtype (fp32 by default) and device."""
        return self.plan.model_spec(model, dtype=self.s["dtype"], device=self.s["device"])

    def weights_settings(self) -> dict:
        return {"chunk_size": self.s["chunk_size"]}

    def selection(self) -> dict:
        """The paper's (p, n) and the grid; the grid always holds the default point."""
        p, n = self.s["top_norm_fraction"], self.s["n_neurons"]
        fractions = sorted(set(self.s["grid"]["top_norm_fraction"]) | {p})
        ns = sorted(set(self.s["grid"]["n_neurons"]) | {n})
        return {"top_norm_fraction": p, "n_neurons": n, "grid": {"top_norm_fraction": fractions, "n_neurons": ns}}

    def default_selection(self) -> dict:
        return {k: self.s[k] for k in ("top_norm_fraction", "n_neurons")}

    def ablates(self) -> bool:
        return bool(self.ablation["datasets"] or self.ablation["text_files"])

    def ablation_input(self, model: str) -> dict:
        return {"neurons": path("confidence_neurons", model=model),
                "data": [path("data", dataset=ds) for ds in self.ablation["datasets"]],
                "text_files": list(self.ablation["text_files"]), **self.plan.model_folder(model)}

    def ablation_settings(self) -> dict:
        return dict(self.ablation)

    def pairs(self, family: str | None = None) -> list[list[str]]:
        """Unordered pairs (IoU is symmetric), of one family if given."""
        pairs = self.plan.family_pairs(family) if family else self.plan.unordered_pairs()
        return [list(p) for p in pairs]

    def _members(self, family: str | None) -> list[str]:
        return self.plan.families()[family] if family else self.plan.models

    def neurons(self, family: str | None = None) -> dict[str, str]:
        return {m: path("confidence_neurons", model=m) for m in self._members(family)}

    def ablations(self, family: str | None = None) -> dict[str, str]:
        return {m: path("confidence_ablation", model=m) for m in self._members(family)}

    def outputs(self) -> list[str]:
        if not self.active:
            return []
        outs = [table(f"confidence_{t}") for t in ("neurons", "entropy_neurons", "iou")]
        outs += [f"results/figures/confidence/scatter/{m}.png" for m in self.plan.models]
        for family, members in self.plan.families().items():
            if self.plan.family_pairs(family):
                outs.append(f"results/figures/confidence/iou/{family}.png")
            if len(members) in (2, 3):
                outs.append(f"results/figures/confidence/venn/{family}.png")
        if self.ablates():
            outs.append(table("confidence_ablation"))
            outs += [f"results/figures/confidence/ablation/{f}.png" for f in self.plan.families()]
        return outs


class OrganismPlan(_Stage):
    """The model organism this workflow trains: its recipe, and the floors it must meet."""

    def __init__(self, plan):
        super().__init__(plan)
        self.recipe = recipe.with_defaults(self.config.get("organism"))

    def trained(self, name: str) -> bool:
        """Whether the config analyses the organism model ``name`` this workflow trains."""
        spec = self.config["models"].get(name)
        return spec is not None and Path(spec["path"]) == Path("results", "models", name)

    def floors_input(self) -> dict:
        """The behaviour checks, and the analyses' outputs of the organism that the config
        runs (the base model's truth layers, the instruct model's own refusal direction and
        its scores)."""
        inputs = {"checks": table("organism_checks")}
        if self.trained("organism-base") and self.plan.truth.active:
            inputs["truth_layers"] = self.plan.truth.layers_path("organism-base")
        if self.trained("organism-instruct") and self.plan.refusal.active:
            m = "organism-instruct"
            inputs["direction"] = path("refusal_meta", model=m)
            inputs["baseline"] = path("refusal_baseline", model=m)
            inputs["steering"] = path("refusal_steering", source=m, target=m)
        return inputs

    def outputs(self) -> list[str]:
        """Built only when the config uses an organism model or dataset."""
        organism_paths = {Path("results", "models", o) for o in ORGANISM_MODELS}
        uses_models = any(Path(m.get("path", "")) in organism_paths for m in self.config["models"].values())
        uses_data = any("organism" in spec for spec in self.config.get("datasets", {}).values())
        return [table("organism_floors")] if uses_models or uses_data else []
