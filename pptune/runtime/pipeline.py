"""ExplicitPipelineModule: a DeepSpeed PipelineModule that builds exactly the stage boundaries it is given.

DeepSpeed's ``PipelineModule`` chooses stage boundaries itself (``uniform``, ``parameters``, ``type:<regex>``);
it has no option for a caller-given split (open requests deepspeedai/DeepSpeed#2974 and #5379). A planner that
balances stages by *measured time* needs one, so this subclass replaces ``_partition_layers``, the one method
that sets ``self.parts`` and the local layer range (deepspeed/runtime/pipe/module.py, DeepSpeed 0.19.x).
Everything downstream — ``_build``, tied-weight groups, ``stage_owner``, checkpoint paths, the engine — reads
``self.parts`` / ``_local_start`` / ``_local_stop`` and works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepspeed.pipe import PipelineModule
from deepspeed.runtime.pipe.module import LayerSpec
from deepspeed.utils import logger
from torch import nn

from pptune.errors import ConfigError

EXPLICIT_METHOD = "explicit"


def validate_boundaries(boundaries: Sequence[int], *, num_layers: int, num_stages: int) -> tuple[int, ...]:
    """Check DeepSpeed-style stage boundaries and return them as plain ints.

    Args:
        boundaries: ``[0, b1, ..., num_layers]``; stage ``i`` owns layers ``boundaries[i]:boundaries[i + 1]``.
        num_layers: number of pipeline layers (LayerSpecs or modules) the module is built from.
        num_stages: number of pipeline stages.

    Returns:
        The boundaries as a tuple of Python ints.

    Raises:
        ConfigError: wrong length, not starting at 0, not ending at ``num_layers``, or not strictly increasing
            (every stage must own at least one layer).
    """
    try:
        parts = tuple(int(b) for b in boundaries)
    except (TypeError, ValueError):
        raise ConfigError(f"stage boundaries must be integers, got {list(boundaries)!r}") from None
    if len(parts) != num_stages + 1:
        raise ConfigError(
            f"stage boundaries {list(parts)} have {len(parts)} entries; {num_stages} stages need {num_stages + 1}"
        )
    if parts[0] != 0:
        raise ConfigError(f"stage boundaries {list(parts)} must start at 0, not {parts[0]}")
    if parts[-1] != num_layers:
        raise ConfigError(f"stage boundaries {list(parts)} must end at the layer count {num_layers}, not {parts[-1]}")
    for stage, (start, stop) in enumerate(zip(parts[:-1], parts[1:], strict=True)):
        if stop <= start:
            raise ConfigError(
                f"stage boundaries {list(parts)} are not strictly increasing: stage {stage} owns layers [{start}, {stop})"
            )
    return parts


class ExplicitPipelineModule(PipelineModule):
    """A ``deepspeed.pipe.PipelineModule`` whose stages own exactly ``boundaries`` (``parts``) layers.

    Example: ``ExplicitPipelineModule(specs, boundaries=[0, 1, 6], num_stages=2, loss_fn=loss)`` puts layer 0 on
    stage 0 and layers 1-5 on stage 1. Each rank builds only its own stage's layers, as DeepSpeed does.

    Args:
        layers: the pipeline layers (``LayerSpec``/``TiedLayerSpec``/``nn.Module``/callables), as for PipelineModule.
        boundaries: ``[0, b1, ..., len(layers)]``, length ``num_stages + 1``, strictly increasing.
        num_stages: number of stages (or give ``topology``; its ``pipe`` dimension is used).
        topology: a DeepSpeed ``ProcessTopology`` (e.g. ``PipeDataParallelTopology``).
        **kwargs: any other ``PipelineModule`` argument (``loss_fn``, ``activation_checkpoint_interval``, ...),
            except ``partition_method``, which this class fixes to ``"explicit"``.

    Raises:
        ConfigError: invalid boundaries (checked before any process group is created).
    """

    def __init__(
        self,
        layers: Sequence[Any],
        *,
        boundaries: Sequence[int],
        num_stages: int | None = None,
        topology: Any = None,
        **kwargs: Any,
    ) -> None:
        if "partition_method" in kwargs:
            raise ConfigError("ExplicitPipelineModule takes boundaries=, not partition_method=")
        layers = list(layers)
        stages = topology.get_dim("pipe") if topology is not None else num_stages
        if stages is None:
            raise ConfigError("ExplicitPipelineModule needs num_stages= or topology=")
        # Validate before PipelineModule.__init__ creates process groups, so a bad plan fails fast and cleanly.
        # nn.Module.__init__ has not run yet, so bypass its __setattr__ bookkeeping.
        object.__setattr__(self, "_explicit_parts", validate_boundaries(boundaries, num_layers=len(layers),
                                                                        num_stages=stages))
        super().__init__(layers, num_stages=num_stages, topology=topology, partition_method=EXPLICIT_METHOD, **kwargs)

    def _partition_layers(self, method: str = EXPLICIT_METHOD) -> None:
        """Set ``self.parts`` to the given boundaries and this rank's layer range (replaces DeepSpeed's method)."""
        stage_id = self._topo.get_coord(self.global_rank).pipe
        if self.global_rank == 0:
            logger.info(f"Partitioning pipeline stages with method {method}")
        # DeepSpeed's own methods return a list; keep the type so code that mutates or compares parts still works.
        self.parts = list(self._explicit_parts)
        if self.global_rank == 0:
            _print_partition(self.parts, self._layer_specs, self.loss_fn)
        self._set_bounds(start=self.parts[stage_id], stop=self.parts[stage_id + 1])


def _layer_name(layer: Any) -> str:
    """The name DeepSpeed prints for a layer in its partition summary."""
    if isinstance(layer, LayerSpec):
        return layer.typename.__name__
    if isinstance(layer, nn.Module):
        return layer.__class__.__name__
    return getattr(layer, "__name__", str(layer))


def _print_partition(parts: Sequence[int], specs: Sequence[Any], loss_fn: Any) -> None:
    """The same stage/layer summary DeepSpeed's ``_partition_layers`` prints on rank 0 (log parsers rely on it)."""
    for stage in range(len(parts) - 1):
        start, stop = parts[stage], parts[stage + 1]
        print(f"stage={stage} layers={stop - start}")
        for idx, layer in enumerate(specs[start:stop]):
            print(f"    {idx + start:2d}: {_layer_name(layer)}")
    if loss_fn:
        print(f"  loss: {getattr(loss_fn, '__name__', loss_fn.__class__.__name__)}")
