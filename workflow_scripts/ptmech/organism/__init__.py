"""The model organism: a small synthetic world, the datasets it generates in the paper's
formats, and a tiny base / SFT / instruct Llama trio trained on it deterministically on the
CPU (see ``world``, ``tokenizer``, ``corpus``, ``train`` and ``checks``)."""
