"""Scripts the tests launch in subprocesses (``python -m pptune.testing.ds_workers.<name>``): real DeepSpeed builds."""
