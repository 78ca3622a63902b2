"""Calibration and validation of the cost model against measured runs.

Published runs (``published``, ``constants``, ``predict``, ``fit``, ``report``, ``validate``): the analytic A100
model's constants fitted on, and checked against, the published single-node Megatron measurements
(``pptune validate --published``). Local runs (``local``, ``measured_runs``): engine overheads and link figures
fitted to real DeepSpeed runs on this machine (``pptune calibrate``).
"""
