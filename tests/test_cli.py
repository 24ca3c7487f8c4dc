"""The `portrait` command at its boundary: configuration errors are one clear line and exit 2."""
from __future__ import annotations

import pytest

from pipeline.cli import main as portrait


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("portrait: error: ")
    return err[0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["build", "--input", "/no/such/folder", "--out", "{tmp}/o"], "dataset root not found"),
        (
            ["build", "--input", "{tmp}", "--out", "{tmp}/o", "--set", "thresholds.max_occlusoin=0.3"],
            "thresholds.max_occlusoin",
        ),
        (["build", "--input", "{tmp}", "--out", "{tmp}/o", "--set", "crop.out_size=500"], "crop.out_size"),
        (["build", "--input", "{tmp}", "--out", "{tmp}/o", "--config", "{tmp}/missing.yaml"], "config file not found"),
        (
            ["build", "--input", "{tmp}", "--out", "{tmp}/o", "--set", "features.latents.weights=/no/vae"],
            "features.latents.weights",
        ),
        (
            ["build", "--input", "{tmp}", "--out", "{tmp}/o", "--set", "features.pose.backend=dwpose"],
            "features.pose.det_path",
        ),
        (["build", "--dataset", "nosuch={tmp}", "--out", "{tmp}/o"], "unknown dataset adapter"),
        (["query", "--catalog", "{tmp}/none.duckdb", "SELECT 1"], "no catalog"),
    ],
)
def test_configuration_errors_are_one_line(args, needle, tmp_path, capsys):
    code = portrait([a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2
    assert needle in one_line_error(capsys)


def test_bad_sql_is_one_line(feature_build, capsys):
    code = portrait(["query", "--catalog", str(feature_build / "catalog.duckdb"), "SELECT nope FROM clips"])
    assert code == 2
    assert "nope" in one_line_error(capsys)


def test_query_writes_csv_and_named_queries_take_parameters(feature_build, tmp_path, capsys):
    csv = tmp_path / "clips.csv"
    assert portrait(["query", "--catalog", str(feature_build), "--named", "rethreshold",
                     "--param", "max_occluded_share=1.0", "--csv", str(csv)]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0].startswith('"clip_id"') and len(lines) > 1


def test_paper_preset_prints_its_parameter_counts(capsys):
    assert portrait(["train", "--preset", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "total" in out.lower() and "control" in out.lower()
