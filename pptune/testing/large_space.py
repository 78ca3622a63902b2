"""The planner's largest spaces as bulk cost-model inputs: GPT-3 175B on 1,024 A100-80GB at batch 1536.

``pptune plan gpt3-175b --cluster a100-80g --gpus 1024 --global-batch-size 1536 --exhaustive`` evaluates these
(the benchmarks time and compare them; tests check estimate_many against estimate() on them).
"""

from __future__ import annotations

TARGETS = ("deepspeed", "megatron")


def bulk_inputs(target: str) -> tuple:
    """(cluster, configurations, {tp: profile}) of the exhaustive plan's space, as the planner builds them.

    The profiles are the cost model's input (built once per tp by the planner), not part of it.
    """
    from pptune.hardware import load_cluster
    from pptune.model_source import resolve_model
    try:
        from pptune.planner import build_space
    except ImportError:  # a revision before the planner package (bench_plan_speed --baseline runs this file there)
        from pptune.space import build_space  # type: ignore[no-redef]

    source = resolve_model("gpt3-175b")
    cluster = load_cluster("a100-80g", num_gpus=1024)
    space = build_space(num_blocks=source.num_blocks, gpus=1024, gpus_per_node=cluster.gpus_per_node,
                        global_batch_size=1536, num_heads=source.num_heads, num_kv_heads=source.num_kv_heads,
                        target=target, block_kind=source.block_kind)
    configs = list(space.configs())
    profiles = {tp: source.profile(cluster, tp=tp, dtype="bf16", micro_batch_sizes=space.micro_batch_sizes)
                for tp in sorted({c.tp for c in configs})}
    return cluster, configs, profiles
