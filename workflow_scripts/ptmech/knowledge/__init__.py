"""The knowledge stage (METHODS.md §3): true/false statement pairs (``pairs``), activation
patching within and across models (``patching``) and the heatmaps and their figures
(``heatmaps``)."""
