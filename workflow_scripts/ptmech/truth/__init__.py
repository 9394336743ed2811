"""The truthfulness stage (METHODS.md §4): probes, probe transfer and the probe layer from
cached activations (``probes``), truth-direction steering of a live model (``steering``)
and the stage's figures (``figures``)."""
