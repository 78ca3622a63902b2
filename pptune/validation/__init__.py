"""Predicted vs measured on this machine: a grid of configurations run with real DeepSpeed (``pptune validate --local``)."""
