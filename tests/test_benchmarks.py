"""The speed tools run end to end on tiny settings and print their tables (no timing asserted)."""
from common import QUICK_CONFIG as QUICK
from common import load_tool


def test_benchmark_inference_prints_the_tables(capsys):
    tool = load_tool("benchmark_inference")
    assert tool.main(["--configs", str(QUICK), "--images", "2", "--warmup", "1", "--batch", "2",
                      "--device", "cpu", "--peak-seconds", "0.05", "--dataset",
                      "mayolact_shapes_val", "MODEL.YOLACT.NUM_CLASSES", "8"]) == 0
    out = capsys.readouterr().out
    assert "peak = " in out and "batch 2" in out
    rows = [line for line in out.splitlines() if line.startswith(f"| {QUICK.stem} |")]
    assert len(rows) == 3  # end to end, per stage, arithmetic rate
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # 160x160 input: P3..P7 of 20, 10, 5, 3, 2 with one anchor each.
    assert cells[1] == "538"
    assert float(cells[3]) > 0  # fvcore GFLOPs were counted
    assert float(cells[5]) > 0 and cells[6] == "1.00x"
    assert float(cells[8]) > 0 and cells[9].endswith("%")  # GFLOP/s and the share of the peak
    stages = [c.strip() for c in rows[1].strip("|").split("|")]
    assert len(stages) == 1 + 6 + 2  # the six stages, other, end to end
    assert all(float(c.split()[0]) > 0 for c in stages[1:7])


def test_benchmark_mapper_prints_the_overhead(capsys):
    tool = load_tool("benchmark_mapper")
    tool.main(["--images", "2", "--size", "128", "--dataset", "mayolact_shapes_train"])
    out = capsys.readouterr().out
    assert "with integral images" in out and "without integral images" in out


def test_fast_nms_benchmark_checks_and_prints(capsys):
    tool = load_tool("benchmark_fast_nms")
    assert tool.main(["--sets", "1", "--repeats", "1", "--background", "5"]) == 0
    out = capsys.readouterr().out
    assert "| 0 |" in out and "same detections, bit for bit" in out


def test_weights_load_benchmark_prints_the_table(capsys):
    rows = load_tool("benchmark_weights_load").main(
        ["--config-file", str(QUICK), "--repeats", "1"])
    out = capsys.readouterr().out
    assert [name for name, _ in rows] == [
        "torch.load(weights_only=True)", "CRC-32 of every member", "finiteness of every tensor",
        "load_weights_file (all of it)"]
    assert "| CRC-32 of every member" in out and "MB checkpoint" in out


def test_validation_benchmark_prints_the_table(coco_mini, capsys):
    load_tool("benchmark_validation").main(["--scale", "0.002"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| coco_mini")
            or line.startswith("| synthetic")]
    assert len(rows) == 3  # coco_mini train and val, the synthetic json
    assert all(line.split("|")[5].strip() == "0" for line in rows)  # no problem found


def test_predictor_memory_benchmark_runs_a_row(capsys):
    from mayolact.analysis.benchmark_predictor_memory import run_benchmark

    run_benchmark(str(QUICK), rows=[(300, 256 * 256, 5)], timeout=600)
    row = capsys.readouterr().out.splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "300x300" and cells[3] == "256x256", row  # shrunk to the bound
