"""Teach a model to skip tokens on demand (TokenSkip's second half).

* :mod:`~tokenskip.training.sft`: the mixture of original and compressed CoTs (``tokenskip build-sft``), one
  ratio γ per example, γ written into the prompt.
* :mod:`~tokenskip.training.train` and :mod:`~tokenskip.training.lora_run`: LoRA SFT on the model's chat
  template, loss on the completion only, resumable (``tokenskip train``).
* :mod:`~tokenskip.training.tale_pt`: TALE-PT's data and runs (``tokenskip tale train-sft|train-dpo``).

The verbs themselves are in :mod:`tokenskip.verbs` (``merge`` included).
"""
