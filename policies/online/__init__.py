"""Online learning of the tier and model variant per request (issue 13; models.md §D). Pure.

:mod:`.linucb` — the discounted LinUCB learner with a model prior and its versioned JSON state;
:mod:`.policy` — ``online``: the learner as a request-routing policy with safe, bounded
exploration; :mod:`.live` — the controller's step (observations → update → placement hints and
route weights).
"""
