"""HOW_TO_RUN.md of a plan directory: what each file is and how to launch, edit and re-plan."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pptune.emit.launch import node_layout
from pptune.planner.ranking import config_label

if TYPE_CHECKING:
    from pptune.planner import PlanResult


def _breakdown(result: PlanResult) -> list[str]:
    b = result.estimate.breakdown.to_dict()
    return [f"| {k.removesuffix('_ms').replace('_', ' ')} | {v:.2f} |" for k, v in b.items()]


def _nodes_section(*, per_node: int) -> list[str]:
    """Several nodes: the DeepSpeed launcher over ssh, torchrun once per node, SLURM, and `pptune measure`."""
    return [
        "### Several nodes",
        "",
        "- **ssh** (DeepSpeed's launcher): list the nodes in `hostfile` (`<host> slots=<GPUs>`, node 0 first) and run",
        "  `./launch.sh`; or `pptune measure PLAN_DIR --hostfile hostfile`, which starts one torchrun agent per host",
        "  (over `ssh -o BatchMode=yes` for other hosts) and compares with the prediction. The plan directory and the",
        "  Python environment must be at the same paths on every node (a shared file system).",
        "- **once per node** (torchrun's static rendezvous): on node i of N run",
        "  `NNODES=N NODE_RANK=i MASTER_ADDR=<node 0> MASTER_PORT=29500 ./launch.sh`, or",
        "  `pptune measure PLAN_DIR --nnodes N --node-rank i --rdzv-endpoint <node 0>:29500`. Node 0 holds global",
        "  rank 0, which gathers every rank's timers and writes `measured.json`.",
        "- **SLURM**: one task per node, node 0 of the allocation as the rendezvous:",
        "",
        "```bash",
        "#!/bin/bash",
        f"#SBATCH --nodes=N --ntasks-per-node=1 --gpus-per-node={per_node}",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) MASTER_PORT=29500',
        "export NNODES=$SLURM_NNODES",
        "srun bash -c 'NODE_RANK=$SLURM_NODEID ./launch.sh'",
        "# or: srun bash -c 'pptune measure PLAN_DIR --nnodes $SLURM_NNODES --node-rank $SLURM_NODEID \\",
        "#                    --rdzv-endpoint $MASTER_ADDR:$MASTER_PORT'",
        "```",
        "",
    ]


def _deepspeed_section(result: PlanResult, pipe: dict[str, Any]) -> list[str]:
    c = result.best
    explicit = pipe["partition_method"] == "explicit"
    module = ("from pptune.runtime.pipeline import ExplicitPipelineModule\n"
              f"module = ExplicitPipelineModule(layers, boundaries={pipe['boundaries']}, num_stages={c.pp},\n"
              f"                                loss_fn=loss_fn, activation_checkpoint_interval={c.recompute_interval})"
              if explicit else
              "from deepspeed.pipe import PipelineModule\n"
              f"module = PipelineModule(layers, num_stages={c.pp}, partition_method={pipe['partition_method']!r},\n"
              f"                        loss_fn=loss_fn, activation_checkpoint_interval={c.recompute_interval})")
    out = [
        "## Run it with DeepSpeed",
        "",
        "`./launch.sh` starts `python -m pptune.runtime.train PLAN_DIR` under the `deepspeed` launcher: every rank builds",
        "its stage of the model from `pipeline.json`, trains on synthetic tokens and rank 0 writes `measured.json`",
        "(`pptune measure PLAN_DIR` compares it with this prediction). For more than one node, copy",
        "`hostfile.example` to `hostfile` and put your node names in it.",
        "",
        "Your own script: keep `ds_config.json` and build the model with the same split:",
        "",
        "```python",
        module,
        "engine, _, _, _ = deepspeed.initialize(model=module, config='ds_config.json',",
        "                                      model_parameters=[p for p in module.parameters() if p.requires_grad])",
        "loss = engine.train_batch(data_iter)  # one optimizer step = gradient_accumulation_steps micro-batches",
        "```",
        "",
    ]
    if explicit:
        out += [
            "The best split is pptune's time-`balanced` one, which no DeepSpeed `partition_method` reproduces, so",
            "`pipeline.json` says `\"partition_method\": \"explicit\"` and lists the `boundaries` (DeepSpeed's",
            "`PipelineModule.parts`); `ExplicitPipelineModule` builds exactly those stages.",
            "",
        ]
    if c.recompute_interval > 0 and pipe["engine"] != "plain":
        out += [f"Recompute is on (`activation_checkpoint_interval={c.recompute_interval}`): also pass",
                "`checkpointable_layers=[\"TransformerBlockPipe\"]` (your block class) to the module, as",
                "`pptune.runtime` does. DeepSpeed's default recomputes every layer with parameters, the embedding",
                "included, and backward on stage 0 then fails with \"element 0 of tensors does not require grad\".",
                ""]
    if pipe["engine"] == "plain":
        out += ["pp is 1 with ZeRO stage 2/3, which DeepSpeed's pipeline engine rejects: wrap the layers in an",
                "`nn.Sequential` and call `engine.backward`/`engine.step` instead of `train_batch`.", ""]
    if c.tp > 1:
        out += [f"tp is {c.tp}: the layers must be tensor-parallel (Megatron-style, as in Megatron-DeepSpeed); DeepSpeed's",
                "pipeline engine places the tp ranks but does not split the layers itself.", ""]
    out += _nodes_section(per_node=node_layout(c, result.cluster)[1])
    out += [
        "### Editing ds_config.json",
        "",
        "Free to change: the optimizer section (type, lr, betas, weight decay), `gradient_clipping`, `steps_per_print`,",
        "`wall_clock_breakdown`. `\"torch_adam\": true` uses `torch.optim.AdamW` so nothing is JIT-compiled; on GPUs you",
        "may delete it to get DeepSpeed's FusedAdam. Re-plan instead of editing `train_batch_size`,",
        "`train_micro_batch_size_per_gpu`, `gradient_accumulation_steps`, the ZeRO stage, the precision or",
        "`pipeline.activation_checkpoint_interval`: the prediction depends on them.",
        "",
    ]
    return out


def _runtime_notes(result: PlanResult) -> list[str]:
    """A warning per way the run differs from how the measured profile was timed (dtype, CPU threads)."""
    from pptune.profile.runtime_match import runtime_mismatches

    notes = runtime_mismatches(result.profile, dtype=result.best.dtype, origin=f"`{result.model.text}`")
    return [line for note in notes for line in (f"**Note:** {note}.", "")]


def how_to_run(result: PlanResult, *, pipeline: dict[str, Any], summary: str, command: str | None) -> str:
    c, s = result.best, result.settings
    lines = [
        f"# Plan: {result.model.name} on {result.gpus} x {result.cluster.gpu.name}",
        "",
        f"Recommended: `{config_label(c)}` (target {c.target}), predicted {summary}.",
        "",
        "| breakdown | ms |",
        "| --- | --- |",
        *_breakdown(result),
        "",
        f"Made by `{command}`." if command else "Made by pptune.planner.plan().",
        f"Search: {s.method}, objective {s.objective}, seed {s.seed}, {result.evaluations} evaluations, "
        f"{len(result.ranking)} distinct configurations (all of them in `ranking.csv`, best first).",
        "",
        *_runtime_notes(result),
        "## Files",
        "",
        "- `plan.json`: the configuration, its estimate and breakdown, the search settings, the cluster and profile used.",
        "- `pipeline.json`: stages, topology, partition method and the exact layer boundaries the estimate assumed.",
        "- `ranking.csv`: every evaluated configuration with its prediction; infeasible ones say why.",
        "- `megatron_args.txt`: Megatron-LM flags for the same plan (checked against Megatron's argument rules).",
    ]
    if c.target == "deepspeed":
        lines += ["- `ds_config.json`: the DeepSpeed config (batch keys, precision, ZeRO, optimizer, pipeline section).",
                  "- `launch.sh`, `hostfile.example`: the launch command."]
    else:
        lines += ["- `launch.sh`: torchrun + Megatron-LM's `pretrain_gpt.py` with these flags (set `MEGATRON_LM`)."]
    lines.append("- `figures/`: the planning charts (`pptune plan` draws them unless `--no-figures`; `pptune plot` redraws).")
    if s.storage and "study.db" in s.storage:
        lines += ["- `study.db`: the Optuna study (SQLite); rerun the same command with `--resume` to add trials."]
    lines.append("")
    if c.target == "deepspeed":
        lines += _deepspeed_section(result, pipeline)
    lines += [
        "## Megatron-LM",
        "",
        "`megatron_args.txt` holds the parallel layout, batch, recompute, optimizer and model-shape flags; add your data,",
        "tokenizer, learning-rate and iteration flags. Splits with equal middle stages use",
        "`--decoder-first/last-pipeline-num-layers`; other splits use `--pipeline-model-parallel-layout`",
        "(Megatron-LM core 0.14 or later).",
        "",
    ]
    return "\n".join(lines)
