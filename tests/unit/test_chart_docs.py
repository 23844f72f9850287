"""The chart README's values table is generated from values.yaml's comments and current."""

from __future__ import annotations

import yaml

from virtualservice_operator_dev.chartdocs import BEGIN, CHART, END, main, render


def test_readme_values_table_is_current() -> None:
    assert main(["--check"]) == 0, "run: python -m virtualservice_operator_dev.chartdocs"


def test_every_top_level_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    table = render(text)
    for key in yaml.safe_load(text):
        row = next(r for r in table.splitlines() if r.startswith(f"| `{key}"))
        assert row.rstrip(" |").split("|")[-1].strip(), f"{key} has no comment in values.yaml"


def test_a_changed_comment_makes_the_readme_stale() -> None:
    text = (CHART / "values.yaml").read_text()
    changed = text.replace("# Old ReplicaSets kept", "# Old ReplicaSets (all) kept")
    assert "Old ReplicaSets (all) kept" in render(changed)
    readme = (CHART / "README.md").read_text()
    assert BEGIN in readme and END in readme
    assert render(changed) not in readme
