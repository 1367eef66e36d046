"""The plain-text results table printed by dnh_jax.main."""

from dnh_jax.report import tables


def test_results_table_rows_columns_and_missing_cells():
  results = {"test/mAP@100": 0.5, "test/nDCG@100": 0.75, "test/held_out/mAP@100": 0.25,
             "test/held_out/num_queries": 7.0, "val/mAP@100": 0.9, "selected_step": 3.0,
             "test/frac_no_relevant": 0.125}
  text = tables.results_table(results).splitlines()
  assert text[0].split() == ["test", "results", "mAP@100", "nDCG@100", "frac_no_relevant"]
  assert text[2].split() == ["all", "queries", "0.5000", "0.7500", "0.1250"]
  assert text[3].split() == ["held_out", "0.2500", "-", "-"]
  # Columns stay aligned however long a metric name is.
  assert len({len(line) for line in text}) == 1
  assert tables.results_table(results, split="val").splitlines()[2].split()[-1] == "0.9000"
  assert tables.results_table({}, split="test") == "(no test results)"
