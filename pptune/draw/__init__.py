"""Every matplotlib figure pptune draws; no module outside this package imports matplotlib (tests/test_layout.py).

Compute, then draw: the series are pure functions elsewhere (``pptune.charts``, ``pptune.calibrate.report``),
and the modules here only draw them. ``save`` writes a figure (Agg, no display, a temporary file then a
rename); ``plan`` draws a plan's five charts (``pptune plan``, ``pptune plot``); ``calibration`` the
predicted-vs-measured chart of ``pptune validate``; ``validation`` the figures of ``pptune validate --local``.
Import these modules where a figure is drawn (inside a command's ``run``), so ``pptune --help`` stays light.
"""
