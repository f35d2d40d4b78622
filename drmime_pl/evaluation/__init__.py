"""Evaluation on landmark data sets: :mod:`.datasets` (pair lists, FIRE, points), :mod:`.sources` (a transform per
pair: saved or registered), :mod:`.metrics` (TRE, rTRE, success rates, AUC), :mod:`.reports` (``pairs.csv``,
``summary.md``, ``success.png``), :mod:`.run` (the loop) and :mod:`.synthetic` (pairs with a known transform).

Layer rule: may import :mod:`drmime_pl.core`, :mod:`drmime_pl.io` and :mod:`drmime_pl.training`, never
:mod:`drmime_pl.cli`. The command line is :mod:`drmime_pl.cli`.
"""
