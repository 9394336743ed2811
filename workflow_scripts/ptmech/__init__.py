"""ptmech: what did post-training change inside a language model? The library behind the Snakemake workflow (no Snakemake imports here)."""

__version__ = "0.1.0"
