"""What is profiled and trained: model specs, presets, pipeline-ready torch layers, adapters."""

from pptune.model.spec import PRESETS, TransformerSpec, parse_spec, resolve_spec

__all__ = ["PRESETS", "TransformerSpec", "parse_spec", "resolve_spec"]
