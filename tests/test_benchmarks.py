"""The speed tools run end to end on tiny settings and print their tables (no timing asserted)."""
from common import QUICK_CONFIG as QUICK
from common import load_tool


def test_benchmark_inference_prints_the_table(capsys):
    tool = load_tool("benchmark_inference")
    assert tool.main(["--configs", str(QUICK), "--images", "1", "--warmup", "0", "--device", "cpu",
                      "--dataset", "mayolact_shapes_val", "MODEL.YOLACT.NUM_CLASSES", "8"]) == 0
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith("| yolact_R_50_FPN_quick_atss_maiou")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    # 160x160 input: P3..P7 of 20, 10, 5, 3, 2 with one anchor each.
    assert cells[1] == "538"
    assert float(cells[3]) > 0  # fvcore GFLOPs were counted
    assert float(cells[5]) > 0 and cells[6] == "1.00x"


def test_benchmark_mapper_prints_the_overhead(capsys):
    tool = load_tool("benchmark_mapper")
    tool.main(["--images", "2", "--size", "128", "--dataset", "mayolact_shapes_train"])
    out = capsys.readouterr().out
    assert "with integral images" in out and "without integral images" in out
