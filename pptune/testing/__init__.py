"""Helpers the test suite shares: vendored-data paths, small synthetic inputs, and scripts tests launch.

pptune itself never imports this package. Tests import it instead of each other (or benchmarks/), so that every
test file stands alone; ``ds_workers`` holds the scripts tests run in subprocesses (``python -m``).
"""
