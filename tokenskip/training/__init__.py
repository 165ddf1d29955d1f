"""Teach a model to skip tokens on demand (TokenSkip's second half).

* ``tokenskip build-sft`` (:mod:`tokenskip.training.sft`): the mixture of original and compressed CoTs,
  one ratio γ per example, γ written into the prompt.
* ``tokenskip train`` (:mod:`tokenskip.training.train`): LoRA SFT on the model's chat template, loss on the
  completion only, resumable.
* ``tokenskip merge`` (:mod:`tokenskip.training.merge`): fold the adapter into the base model.
"""
