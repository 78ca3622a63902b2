"""Checks loading the published CSV (BOM, header, one-line errors) and turning a row into spec and config."""

from __future__ import annotations

import pytest

from pptune.calibrate.published import load_published, padded_vocab, row_config, row_spec
from pptune.errors import SchemaError
from pptune.testing.calibration import SAMPLE_ROWS, write_csv
from pptune.testing.data import PUBLISHED_SINGLE_NODE as DATA


def test_loads_rows_with_bom(tmp_path) -> None:
    rows = load_published(write_csv(tmp_path / "a.csv", SAMPLE_ROWS))
    assert len(rows) == 4 and rows[0].index == 0 and rows[3].index == 3
    r = rows[1]
    assert (r.gpus, r.global_batch, r.micro_batch, r.hidden, r.tp, r.dp, r.pp) == (8, 32, 4, 1024, 2, 2, 2)
    assert r.measured_ms == pytest.approx(219.732754) and r.num_microbatches == 4
    assert load_published(write_csv(tmp_path / "b.csv", SAMPLE_ROWS, bom=False)) == rows


def test_the_published_file_has_1440_rows() -> None:
    rows = load_published(DATA)
    assert len(rows) == 1440
    assert {r.tp * r.dp * r.pp for r in rows} == {2, 4, 8} and {r.hidden for r in rows} == {1024, 2048}


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda r: r.__setitem__(0, 3), "tp 1 x dp 1 x pp 2 != 3 GPUs"),
    (lambda r: r.__setitem__(1, 15), "global batch 15 is not divisible"),
    (lambda r: r.__setitem__(3, "x"), "column 'hidden size': expected an integer"),
    (lambda r: r.__setitem__(10, -1), "must be positive"),
])
def test_bad_rows_raise_one_line(tmp_path, mutate, match) -> None:
    row = list(SAMPLE_ROWS[0])
    mutate(row)
    with pytest.raises(SchemaError, match=match) as info:
        load_published(write_csv(tmp_path / "bad.csv", [row]))
    assert "line 2" in str(info.value) and "\n" not in str(info.value)


def test_bad_header_and_missing_file(tmp_path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SchemaError, match="header"):
        load_published(path)
    with pytest.raises(SchemaError, match="cannot read"):
        load_published(tmp_path / "missing.csv")


def test_megatron_vocabulary_padding() -> None:
    # Megatron's _vocab_size_with_padding: next multiple of 128 * tp.
    assert [padded_vocab(50257, tp) for tp in (1, 2, 4, 8)] == [50304, 50432, 50688, 51200]


def test_row_spec_and_config(tmp_path) -> None:
    row = load_published(write_csv(tmp_path / "a.csv", SAMPLE_ROWS))[3]
    spec, config = row_spec(row), row_config(row)
    assert (spec.num_layers, spec.hidden_size, spec.ffn_hidden_size, spec.vocab_size) == (20, 2048, 8192, 50688)
    assert (config.tp, config.pp, config.dp, config.micro_batch_size, config.num_microbatches) == (4, 2, 1, 2, 4)
    assert config.recompute == "full" and config.dtype == "fp16" and config.partition.startswith("type:")
