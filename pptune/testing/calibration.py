"""Inputs for the calibration tests: published-format CSVs, real sample rows, and measured plan directories."""

from __future__ import annotations

from pathlib import Path

from pptune.calibrate.published import COLUMNS
from pptune.parallel import ParallelConfig

# Real rows of the published file (gpus, gbs, mbs, h, heads, layers, seq, tp, dp, pp, ms): one per layout family.
SAMPLE_ROWS = [
    [2, 16, 8, 1024, 16, 24, 1024, 1, 1, 2, 372.160408],
    [8, 32, 4, 1024, 16, 24, 1024, 2, 2, 2, 219.732754],
    [4, 16, 4, 2048, 16, 24, 1024, 1, 2, 2, 410.490577],
    [8, 8, 2, 2048, 16, 20, 1024, 4, 1, 2, 160.6027],
]

MEASURED_CONFIG = ParallelConfig(pp=2, micro_batch_size=2, num_microbatches=4, dtype="fp32", partition="balanced")


def write_csv(path: Path, rows: list[list[object]], *, bom: bool = True) -> Path:
    """A published-format CSV (with the UTF-8 byte-order mark the real file has)."""
    text = ",".join(COLUMNS) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def measured_dir(tmp_path: Path, config: ParallelConfig = MEASURED_CONFIG, step_ms: float = 123.0, *,
                 name: str = "run", measured_config: ParallelConfig | None = None) -> Path:
    """A plan directory of the tiny GPT with a profile file beside it and a measured.json (all steps ``step_ms``)."""
    from pptune.cost.estimate import estimate
    from pptune.hardware import load_cluster
    from pptune.model.spec import resolve_spec
    from pptune.profile.schema import save_profile
    from pptune.runtime.measured import save_measured
    from pptune.testing.profiles import TINY, small_profile
    from pptune.testing.records import fake_measured
    from pptune.validation.run_dir import write_run_dir

    profile = small_profile()
    profile_path = save_profile(profile, tmp_path / "profile.json")
    cluster = load_cluster("local-cpu")
    path = write_run_dir(tmp_path / name, config=config, estimate=estimate(profile, cluster, config), profile=profile,
                         cluster=cluster, model=TINY, spec=resolve_spec(TINY), profile_label=str(profile_path))
    save_measured(fake_measured(measured_config or config, step_ms), path / "measured.json")
    return path
