"""The verbs: every ``tokenskip <verb>`` is a typed function here, over the library (litgpt's workflow files).

``cli.py`` wires them (``COMMANDS``); each function's signature and docstring are its command line. Verbs may call
other verbs (``pipeline`` runs the TokenSkip stages one after another); nothing in the library imports a verb.

* data: ``filter`` (:mod:`.filter`), ``eval`` (:mod:`.evaluate`), ``report`` (:mod:`.report`)
* generation, through one run session (:class:`tokenskip.session.Session`): ``generate``, ``infer``
  (:mod:`.generate`), ``bench`` (:mod:`.bench`), ``fidelity`` (:mod:`.fidelity`), ``tale estimate|run``
  (:mod:`.tale`), ``tale search`` (:mod:`.tale_search`), ``metareason iterate|score`` (:mod:`.metareason`)
* compression and training: ``compress`` (:mod:`.compress`), ``build-sft`` (:mod:`.build_sft`), ``train``
  (:mod:`.train`), ``tale train-sft|train-dpo`` (:mod:`.tale_pt`), ``merge`` (:mod:`.merge`)
* ``pipeline`` (:mod:`.pipeline`; its recipes: :mod:`.recipes`), ``serve`` (:mod:`.serve`), ``models`` (:mod:`.models`)
"""
