"""The refusal stage (METHODS.md §5): refusal as a linear direction, its candidates,
selection and steering (``directions``), and the stage's figures (``figures``)."""
