"""The speed tools run end to end on tiny settings and print their tables (no timing asserted)."""
import pytest

from common import QUICK_CONFIG as QUICK
from common import load_tool

# The Table 4 pair at its smallest: a dense fixed-IoU YOLACT and maYOLACT (CARAFE FPN, DCNv2).
DENSE = QUICK.parent / "yolact_R_50_FPN_quick_fixediou.yaml"
DCN = QUICK.parent / "mayolact_R_50_FPN_quick.yaml"


def _benchmark_pair(capsys, *flags, opts=()):
    """benchmark_inference on DENSE and DCN, 2 shapes images at 96, one thread; its stdout."""
    tool = load_tool("benchmark_inference")
    assert tool.main(["--configs", str(DENSE), str(DCN), "--images", "2", "--warmup", "0",
                      "--device", "cpu", "--threads", "1", "--peak-seconds", "0.05",
                      "--dataset", "mayolact_shapes_val", *flags, "INPUT.YOLACT.SIZE", "96",
                      "MODEL.YOLACT.NUM_CLASSES", "8", *opts]) == 0
    return capsys.readouterr().out


def test_benchmark_inference_prints_the_tables(capsys):
    tool = load_tool("benchmark_inference")
    assert tool.main(["--configs", str(QUICK), "--images", "2", "--warmup", "1", "--batch", "2",
                      "--device", "cpu", "--peak-seconds", "0.05", "--dataset",
                      "mayolact_shapes_val", "MODEL.YOLACT.NUM_CLASSES", "8"]) == 0
    out = capsys.readouterr().out
    assert "peak = " in out and "batch 2" in out
    rows = [line for line in out.splitlines() if line.startswith(f"| {QUICK.stem} |")]
    assert len(rows) == 4  # end to end, per stage, arithmetic rate, ResNet stages
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # 160x160 input: P3..P7 of 20, 10, 5, 3, 2 with one anchor each.
    assert cells[1] == "538"
    assert float(cells[3]) > 0  # fvcore GFLOPs were counted
    assert float(cells[5]) > 0 and cells[6] == "1.00x"
    assert float(cells[8]) > 0 and cells[9].endswith("%")  # GFLOP/s and the share of the peak
    stages = [c.strip() for c in rows[1].strip("|").split("|")]
    assert len(stages) == 1 + 6 + 2  # the six stages, other, end to end
    assert all(float(c.split()[0]) > 0 for c in stages[1:7])
    resnet = [c.strip() for c in rows[3].strip("|").split("|")]
    assert len(resnet) == 1 + 4 and all("GFLOP" not in c and " ms / " in c for c in resnet[1:])


def test_benchmark_inference_interleaves_paths_and_prints_the_ratios(capsys):
    """--compare-paths: the rewritten and the bit-exact paths in the same run, and the ratios of
    Table 4 (dense vs DCN stages); --deviation: the bit-exact path's detections against the
    default path's; --clock thread on one thread."""
    out = _benchmark_pair(capsys, "--clock", "thread", "--compare-paths", "--deviation", "1")
    assert "CPU time of the one thread" in out
    for label in (f"{DENSE.stem}, rewritten path", f"{DENSE.stem}, bit-exact path",
                  f"{DCN.stem}, bit-exact path"):
        assert sum(line.startswith(f"| {label} |") for line in out.splitlines()) == 2, label
    ratios = out[out.index("Ratios of this run"):]
    for what in (f"{DCN.stem} vs {DENSE.stem}, end to end", "the network alone",
                 "(res3-res5, dense) vs",
                 "default path vs rewritten path", "bit-exact path vs default path"):
        assert what in ratios, what
    deviation = [line for line in out.splitlines()
                 if line.startswith(f"| {DCN.stem} |") and "| yes |" in line]
    assert len(deviation) == 1  # same detections on the bit-exact path


def test_benchmark_inference_matched_load(capsys):
    """--matched-load: every config again with trained-like weights, which return
    TEST.DETECTIONS_PER_IMAGE detections each, and the end-to-end ratio at that load."""
    out = _benchmark_pair(capsys, "--no-flops", "--matched-load",
                          opts=("TEST.DETECTIONS_PER_IMAGE", "5"))
    assert "behave like a trained model's" in out  # the caption says what matched load is
    for config in (DENSE, DCN):
        rows = [line for line in out.splitlines()
                if line.startswith(f"| {config.stem}, matched load |")]
        assert len(rows) == 2  # end to end, per stage
        assert [c.strip() for c in rows[0].strip("|").split("|")][7] == "5.0"  # detections
    ratios = out[out.index("Ratios of this run"):]
    assert f"{DCN.stem} vs {DENSE.stem}, end to end at matched load (5.0 and 5.0 " in ratios
    assert f"{DCN.stem} vs {DENSE.stem}, end to end: " in ratios  # next to the default one


def test_benchmark_inference_matched_load_refuses_trained_weights(tmp_path):
    tool = load_tool("benchmark_inference")
    with pytest.raises(ValueError, match="--matched-load rescales seeded random weights"):
        tool.main(["--configs", str(QUICK), "--images", "1", "--warmup", "0", "--device", "cpu",
                   "--peak-seconds", "0.05", "--dataset", "mayolact_shapes_val", "--no-flops",
                   "--matched-load", "MODEL.YOLACT.NUM_CLASSES", "8",
                   "MODEL.WEIGHTS", str(tmp_path / "model.pth")])


def test_benchmark_inference_thread_clock_needs_one_thread():
    tool = load_tool("benchmark_inference")
    with pytest.raises(ValueError, match="--threads 1"):
        tool.main(["--configs", str(QUICK), "--threads", "2", "--clock", "thread",
                   "--device", "cpu"])


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
def test_deform_conv_benchmark_checks_and_prints(capsys):
    load_tool("benchmark_deform_conv").main(["--repeats", "1", "--skip-training"])
    out = capsys.readouterr().out
    assert out.count("| res") == 4 and "| 35 |" in out and "torchvision / ATen" in out
