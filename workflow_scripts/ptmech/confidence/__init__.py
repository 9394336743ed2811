"""The confidence stage (METHODS.md §6): entropy neurons of the last MLP layer, from weights
and by ablation (``neurons``), and the stage's figures (``figures``)."""
