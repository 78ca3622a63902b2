"""Launch scripts of a plan: ``launch.sh`` (DeepSpeed launcher or torchrun + Megatron-LM) and ``hostfile.example``.

The DeepSpeed launcher takes ``--num_nodes``/``--num_gpus`` (GPUs per node) and an MPI-style hostfile
(``<host> slots=<gpus>``, deepspeed/launcher/runner.py ``fetch_hostfile``); ``--module`` runs the entry point
as ``python -m`` would. Ranks are laid out by DeepSpeed's topology with the model (tp) axis innermost, so a tp
group stays on one node when the GPUs per node are a multiple of tp.
"""

from __future__ import annotations

from pptune.emit.deepspeed import engine_kind
from pptune.errors import ConfigError
from pptune.hardware import Cluster
from pptune.parallel import ParallelConfig


def node_layout(config: ParallelConfig, cluster: Cluster) -> tuple[int, int]:
    """(nodes, GPUs per node) that hold ``config.world_size`` GPUs on ``cluster``."""
    world = config.world_size
    per_node = min(world, cluster.gpus_per_node)
    nodes = -(-world // per_node)
    if world % nodes:
        raise ConfigError(f"{world} GPUs do not split evenly over {nodes} nodes of {cluster.gpus_per_node}")
    return nodes, world // nodes


def hostfile_example(config: ParallelConfig, cluster: Cluster) -> str:
    nodes, per_node = node_layout(config, cluster)
    lines = ["# DeepSpeed hostfile: one line per node, '<hostname> slots=<GPUs on it>'.",
             "# Copy to 'hostfile' next to launch.sh and replace the names with your nodes (ssh-reachable without a password)."]
    lines += [f"node{i + 1} slots={per_node}" for i in range(nodes)]
    return "\n".join(lines) + "\n"


def _header(label: str, summary: str, command: str | None) -> list[str]:
    out = ["#!/usr/bin/env bash", f"# pptune plan: {label}", f"# predicted: {summary}"]
    if command:
        out.append(f"# made by: {command}")
    return out


def deepspeed_launch(config: ParallelConfig, cluster: Cluster, *, label: str, summary: str, partition_method: str,
                     command: str | None = None) -> str:
    """``launch.sh`` running ``python -m pptune.runtime.train PLAN_DIR`` under the ``deepspeed`` launcher."""
    nodes, per_node = node_layout(config, cluster)
    module = "ExplicitPipelineModule (pptune.runtime.pipeline)" if partition_method == "explicit" else "PipelineModule"
    if engine_kind(config) == "plain":  # the pipeline engine rejects ZeRO 2/3
        module = "plain nn.Sequential (ZeRO 2/3 needs DeepSpeed's plain engine; use engine.backward/step)"
    lines = _header(label, summary, command) + [
        "#",
        f"# {nodes} node(s) x {per_node} GPUs = tp {config.tp} x pp {config.pp} x dp {config.dp}.",
        "# Runs pptune's training entry point on this plan (synthetic tokens; it writes measured.json):",
        "#   ./launch.sh [--steps N] [--warmup N]",
        "# Multi-node: copy hostfile.example to hostfile and edit it (or set HOSTFILE=path); the deepspeed launcher",
        "# then starts every node over ssh. Without ssh (SLURM, see HOW_TO_RUN.md): run it once per node with",
        "#   NNODES=N NODE_RANK=0..N-1 MASTER_ADDR=<node 0> [MASTER_PORT=29500] ./launch.sh",
        "# (torchrun's static rendezvous: node 0 holds rank 0, which writes measured.json with every rank's timers).",
        "#",
        "# Your own training script with the same plan:",
        f"#   deepspeed --num_nodes {nodes} --num_gpus {per_node} your_train.py --deepspeed_config ds_config.json",
        f"#   and in it build the model as a {module} with the arguments in pipeline.json",
        "#   (num_stages, partition_method or boundaries, activation_checkpoint_interval), then",
        "#   engine, _, _, _ = deepspeed.initialize(model=module, config='ds_config.json', model_parameters=...)",
        "#   and call engine.train_batch(data_iter) once per step. HOW_TO_RUN.md has the details.",
        "set -euo pipefail",
        'PLAN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'HOSTFILE="${HOSTFILE:-$PLAN_DIR/hostfile}"',
        "HOST_ARGS=()",
        'if [[ -f "$HOSTFILE" ]]; then HOST_ARGS=(--hostfile "$HOSTFILE"); fi',
        'if [[ -n "${NNODES:-}" ]]; then  # the plan\'s processes split evenly over NNODES nodes',
        f'  if (( {config.world_size} % NNODES )); then echo "launch.sh: {config.world_size} processes do not split '
        'over $NNODES nodes" >&2; exit 2; fi',
        '  exec "${PYTHON:-python}" -m torch.distributed.run --nnodes "$NNODES" --node-rank "${NODE_RANK:?set NODE_RANK}" \\',
        '    --master-addr "${MASTER_ADDR:?set MASTER_ADDR to node 0}" --master-port "${MASTER_PORT:-29500}" \\',
        f'    --nproc-per-node $(( {config.world_size} / NNODES )) -m pptune.runtime.train "$PLAN_DIR" "$@"',
        'fi',
    ]
    if nodes > 1:
        lines.append('if [[ ${#HOST_ARGS[@]} -eq 0 ]]; then echo "launch.sh: need $HOSTFILE (see hostfile.example)" >&2; exit 2; fi')
    lines.append(f'exec deepspeed --num_nodes {nodes} --num_gpus {per_node} "${{HOST_ARGS[@]}}" '
                 '--module pptune.runtime.train "$PLAN_DIR" "$@"')
    return "\n".join(lines) + "\n"


def megatron_launch(config: ParallelConfig, cluster: Cluster, *, label: str, summary: str, vocab_size: int,
                    command: str | None = None) -> str:
    """``launch.sh`` running Megatron-LM's ``pretrain_gpt.py`` with megatron_args.txt under torchrun."""
    nodes, per_node = node_layout(config, cluster)
    lines = _header(label, summary, command) + [
        "#",
        f"# {nodes} node(s) x {per_node} GPUs = tp {config.tp} x pp {config.pp} x dp {config.dp}.",
        "# Set MEGATRON_LM to a Megatron-LM checkout. Run once per node with NODE_RANK=0..N-1 and MASTER_ADDR set.",
        "# The data arguments below train on mock data with a null tokenizer; replace them with your own",
        "# (--data-path, --tokenizer-type, ...). Extra arguments to this script are passed on to pretrain_gpt.py.",
        "set -euo pipefail",
        "set -f  # the layout flag holds '*' and '|': no globbing of the argument file",
        'PLAN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        ': "${MEGATRON_LM:?set MEGATRON_LM to your Megatron-LM checkout}"',
    ]
    if config.tp > 1:
        lines.append("export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron requires it with tp > 1 before Blackwell")
    lines += [
        "ARGS=($(grep -v '^#' \"$PLAN_DIR/megatron_args.txt\"))",
        f"exec torchrun --nnodes {nodes} --nproc-per-node {per_node} --node-rank \"${{NODE_RANK:-0}}\" "
        '--master-addr "${MASTER_ADDR:-localhost}" --master-port "${MASTER_PORT:-6000}" \\',
        '  "$MEGATRON_LM/pretrain_gpt.py" "${ARGS[@]}" \\',
        f"  --mock-data --tokenizer-type NullTokenizer --vocab-size {vocab_size} \\",
        "  --train-iters 100 --lr 1e-4 --min-lr 1e-5 --lr-decay-style cosine --weight-decay 0.01 --clip-grad 1.0 \\",
        '  "$@"',
    ]
    return "\n".join(lines) + "\n"
