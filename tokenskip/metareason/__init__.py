"""Rational Metareasoning (RaM, De Sabbata, Sumers & Griffiths, arXiv 2410.05563).

A thought ``z`` is worth what it adds to the likelihood of the right answer, minus what it costs to think it:
``reward = log((p(y*|x,z) + ε) / (p(y*|x,∅) + ε)) − c·log(1 + |z|)``. Expert iteration keeps, per question,
the correct rollouts whose reward is at least the question's mean and fine-tunes a LoRA adapter on them.

* :mod:`~tokenskip.metareason.reward`: the arithmetic and the selection (pure, no model);
* :mod:`~tokenskip.metareason.likelihood`: ``log p(y*|x,z)`` from one batched forward pass;
* :mod:`~tokenskip.metareason.score`: the scorer behind ``tokenskip metareason score`` and each round's rewards;
* :mod:`~tokenskip.metareason.rollouts`: one round's generations as methods;
* ``tokenskip metareason iterate|score`` (expert iteration, resumable): :mod:`tokenskip.verbs.metareason`;
* :mod:`~tokenskip.metareason.grpo`: the same reward as an online RL objective (trl ``GRPOTrainer``).
"""
