"""The core: registration as pure tensor computation (torch and numpy only).

Coordinate frames and generator bases (:mod:`.geometry`), the transform (:mod:`.transforms`), the mutual-information
estimator (:mod:`.estimator`, :mod:`.mine`), pyramids and masks (:mod:`.pyramid`), the compared channels
(:mod:`.channels`), the initial transform (:mod:`.init`, :mod:`.search`, :mod:`.ngf`), the verdict
(:mod:`.quality`, :mod:`.checks`), resampling of stored images (:mod:`.resample`) and the parts of a registration
that run at once on threads (:mod:`.tasks`).

Layer rule: nothing here imports Lightning, reads or writes files, or imports :mod:`drmime_pl.io`,
:mod:`drmime_pl.training`, :mod:`drmime_pl.evaluation` or :mod:`drmime_pl.cli` (``tests/test_architecture.py``).
"""
