"""benchmarks/decode.py end to end on a tiny shape: every side runs (ours at the default precision
and float32, CTranslate2 float32 and int8 converted from our export, transformers), and the JSON
line carries the figures, the bandwidth with one and with all threads and the quality gate."""

from __future__ import annotations

import json

from benchmarks import decode
from engine.loading import ROOT


def test_decode_benchmark_reports_every_side(tmp_path, monkeypatch, capsys):
    # The gate on the tail of each bundled model's corpus (tokenizing whole corpora is slow).
    gate = {}
    for spec, data in decode.GATE_DATA.items():
        tail = tmp_path / f"{spec}.txt"
        tail.write_text((ROOT / data).read_text(encoding="utf-8")[-100_000:], encoding="utf-8")
        gate[spec] = str(tail)
    monkeypatch.setattr(decode, "GATE_DATA", gate)
    assert decode.main(["--models", "tiny", "--runs", "1", "--new-tokens", "4", "--threads", "1",
                        "--gate-sequences", "1", "--bandwidth-mib", "16"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (r,) = out["results"]
    assert r["model"] == "tiny" and r["default_precision"] == "int8"
    for side in decode.SIDES:
        assert r[f"{side}_tok_s"] > 0 and r[f"{side}_cpu_tok_s"] > 0, side
    for other in ("ct2_float32", "ct2_int8", "transformers", "ours_fp32"):
        assert abs(r[f"ours_vs_{other}"] - r["ours_tok_s"] / r[f"{other}_tok_s"]) < 0.01
    assert 0 < r["fp32_bandwidth_fraction"]
    bw = out["bandwidth"]
    assert bw["one_thread_gb_s"] > 0 and bw["all_threads_gb_s"] > 0 and bw["all_threads"] >= 1
    assert [g["model"] for g in out["quality_gate"]] == list(gate)
    for g in out["quality_gate"]:
        assert g["precision"] == "int8" and g["passed"] is (abs(g["change"]) <= 0.005)
    assert "concurrent" not in out  # only with --concurrent N


def test_decode_benchmark_rejects_unknown_sides(capsys):
    try:
        decode.main(["--models", "tiny", "--sides", "ours,llama.cpp"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown side was accepted")
    assert "--sides: choose from ours, ours_fp32, ct2_float32, ct2_int8, transformers" in capsys.readouterr().err
