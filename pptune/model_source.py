"""ModelSource: what ``pptune plan MODEL_OR_PROFILE`` names: a preset or spec string, or a measured profile file.

The planner needs the model's shape before any profile exists (blocks for pp, heads for tp) and, later,
one profile per tp degree; ``profile()`` defers that to ``pptune.profile.source.profile_for``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pptune.errors import SchemaError
from pptune.hardware import Cluster
from pptune.model.spec import TransformerSpec, resolve_spec, with_attention
from pptune.profile.analytic import KIND_BLOCK
from pptune.profile.schema import Profile, load_profile
from pptune.profile.source import check_profile_attention


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSource:
    """The model a plan is for."""

    text: str  # MODEL_OR_PROFILE as the user gave it
    name: str  # the model's name (preset, spec string or the profile's ``model``)
    spec: TransformerSpec | None  # None for a profile of a model pptune has no spec for
    num_blocks: int
    seq_len: int
    profile_path: str | None  # a measured (or saved) profile file, else None (analytic)
    block_kind: str  # class name of the blocks (DeepSpeed's ``type:`` partition matches it)
    attention: str | None = None  # the attention kernel asked for (None: the spec's or the profile's own)

    @property
    def num_heads(self) -> int | None:
        return self.spec.num_heads if self.spec else None

    @property
    def num_kv_heads(self) -> int | None:
        return self.spec.kv_heads if self.spec else None

    def profile(self, cluster: Cluster, *, tp: int, dtype: str, micro_batch_sizes: tuple[int, ...]) -> Profile:
        """The profile the cost model uses at ``tp`` (loaded file, or analytic for the cluster's GPU)."""
        from pptune.profile.source import profile_for

        return profile_for(self.text, cluster, tp=tp, dtype=dtype, micro_batch_sizes=micro_batch_sizes,
                           attention=self.attention)

    def profile_label(self, cluster: Cluster) -> str:
        """What plan.json records as the profile: the file path or ``analytic:<gpu>``."""
        return self.profile_path if self.profile_path else f"analytic:{cluster.gpu.name}"


def _is_profile_path(text: str) -> bool:
    return text.endswith(".json")  # as profile_for decides


def resolve_model(model_or_profile: str, *, attention: str | None = None) -> ModelSource:
    """Resolve a preset name, a spec string or a profile path (ConfigError/SchemaError in one line otherwise).

    ``attention``: the kernel asked for (``flash``/``unfused``); a profile file must have been made with it.
    """
    if _is_profile_path(model_or_profile):
        profile = load_profile(model_or_profile)
        blocks = sum(1 for layer in profile.layers if layer.role == "block")
        if blocks == 0:
            raise SchemaError(f"{model_or_profile}: the profile lists no layer with role 'block'")
        spec = TransformerSpec.from_dict(profile.spec) if profile.spec else None
        kinds = sorted({layer.kind for layer in profile.layers if layer.role == "block"})
        check_profile_attention(model_or_profile, profile, attention)
        return ModelSource(text=model_or_profile, name=profile.model, spec=spec, num_blocks=blocks,
                           seq_len=profile.seq_len, profile_path=model_or_profile, block_kind="|".join(kinds),
                           attention=attention)
    spec = with_attention(model_or_profile, resolve_spec(model_or_profile), attention)
    return ModelSource(text=model_or_profile, name=spec.name, spec=spec, num_blocks=spec.num_layers,
                       seq_len=spec.seq_len, profile_path=None, block_kind=KIND_BLOCK, attention=attention)
