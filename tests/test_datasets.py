"""Own COCO-format datasets named in the config, class lists before loading, NUM_CLASSES from
data."""
import json
import uuid

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from mayolact.config.config import add_mayolact_config
from mayolact.data.datasets import (
    apply_dataset_config,
    dataset_arguments,
    dataset_classes,
    dataset_metadata,
    read_coco_categories,
    register_config_datasets,
    resolve_num_classes,
)

# Unsorted, non-contiguous ids, as exported by labelling tools: Detectron2 orders classes by id.
CATEGORIES = [{"id": 9, "name": "thin"}, {"id": 3, "name": "solid"}, {"id": 5, "name": "hollow"}]


def write_coco(folder, categories=CATEGORIES):
    """A one-image COCO json (the image itself is not needed to register or read classes)."""
    folder.mkdir(parents=True, exist_ok=True)
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": categories[0]["id"], "iscrowd": 0,
                         "bbox": [2.0, 2.0, 10.0, 10.0], "area": 100.0,
                         "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]]}],
        "categories": categories,
    }
    path = folder / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def cfg_with(entries=(), train=(), test=(), num_classes=0):
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "YOLACT"
    cfg.DATASETS.YOLACT.COCO_JSON = [list(e) for e in entries]
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    cfg.MODEL.YOLACT.NUM_CLASSES = num_classes
    return cfg


def fresh(prefix="own"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_register_from_config_and_classes_before_loading(tmp_path):
    json_file = write_coco(tmp_path)
    name = fresh()
    cfg = cfg_with([(name, str(json_file), str(tmp_path))], train=[name])
    assert register_config_datasets(cfg) == [name]
    assert register_config_datasets(cfg) == []  # same entry again: left alone
    meta = MetadataCatalog.get(name)
    assert meta.json_file == str(json_file) and meta.evaluator_type == "coco"
    assert "thing_classes" not in meta.as_dict()  # Detectron2 sets them only when loading
    assert dataset_classes(name) == ["solid", "hollow", "thin"]
    # Loading agrees with what was filled in (Metadata refuses a different value).
    dicts = DatasetCatalog.get(name)
    assert dicts[0]["annotations"][0]["category_id"] == 2  # id 9 -> "thin", the third class
    assert dataset_metadata(name).thing_dataset_id_to_contiguous_id == {3: 0, 5: 1, 9: 2}


def test_num_classes_zero_is_taken_from_the_training_set(tmp_path):
    json_file = write_coco(tmp_path)
    name = fresh()
    cfg = cfg_with([(name, str(json_file), str(tmp_path))], train=[name])
    assert apply_dataset_config(cfg).MODEL.YOLACT.NUM_CLASSES == 3
    # An explicit value is kept (mayolact.engine.checks compares it with the datasets).
    cfg = cfg_with([(name, str(json_file), str(tmp_path))], train=[name], num_classes=5)
    assert apply_dataset_config(cfg).MODEL.YOLACT.NUM_CLASSES == 5
    # No training set: the first test set.
    cfg = cfg_with(test=[name])
    assert resolve_num_classes(cfg) == 3


def test_num_classes_zero_without_data_says_what_to_set(tmp_path):
    with pytest.raises(ValueError, match="DATASETS.TRAIN and DATASETS.TEST are empty"):
        resolve_num_classes(cfg_with())
    missing = fresh("missing")
    with pytest.raises(ValueError, match=f"'{missing}' is not registered"):
        resolve_num_classes(cfg_with(train=[missing]))
    # Loading a config whose data is absent keeps 0; the model build reports it.
    assert apply_dataset_config(cfg_with(train=[missing])).MODEL.YOLACT.NUM_CLASSES == 0
    with pytest.raises(ValueError, match=">= 1, or 0"):
        resolve_num_classes(cfg_with(num_classes=-2))


def test_detectron2_num_classes_key_gets_a_hint(tmp_path):
    json_file = write_coco(tmp_path)
    name = fresh()
    for node in ("ROI_HEADS", "RETINANET"):
        cfg = cfg_with([(name, str(json_file), str(tmp_path))], train=[name], num_classes=80)
        cfg.MODEL[node].NUM_CLASSES = 3
        with pytest.raises(ValueError, match=f"MODEL.{node}.NUM_CLASSES is 3.*"
                                             "set MODEL.YOLACT.NUM_CLASSES 3 instead"):
            apply_dataset_config(cfg)
    # The habit is harmless when it agrees with the class count taken from the data.
    cfg = cfg_with([(name, str(json_file), str(tmp_path))], train=[name])
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    assert apply_dataset_config(cfg).MODEL.YOLACT.NUM_CLASSES == 3


def test_bad_entries_name_the_key_and_entry(tmp_path):
    json_file = write_coco(tmp_path)
    cases = [
        ([["only_two", str(json_file)]], "three strings"),
        ([[fresh(), str(tmp_path / "nope.json"), str(tmp_path)]], "nope.json not found"),
        ([[fresh(), str(json_file), str(tmp_path / "no_images")]], "no_images not found"),
        # A builtin name with another json.
        ([["coco_2017_val", str(json_file), str(tmp_path)]], "already registered"),
    ]
    for entries, message in cases:
        with pytest.raises(ValueError, match="DATASETS.YOLACT.COCO_JSON") as exc:
            register_config_datasets(cfg_with(entries))
        assert message in str(exc.value)


@pytest.mark.parametrize("content,message", [
    ("{not json", "cannot read"),
    (json.dumps({"images": []}), "'categories' must be a non-empty list"),
    (json.dumps({"categories": [{"id": "1", "name": "a"}]}), "categories[0] needs an integer 'id'"),
    (json.dumps({"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}), "repeats an id"),
])
def test_bad_categories_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError) as exc:
        read_coco_categories(str(path))
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_builtin_metadata_is_used_as_is():
    # COCO's builtin names carry their classes without any json being read.
    assert len(dataset_classes("coco_2017_val")) == 80
    assert resolve_num_classes(cfg_with(train=["coco_2017_train"])) == 80
    with pytest.raises(KeyError, match="not registered"):
        dataset_metadata(fresh("missing"))


def test_load_config_registers_resolves_and_reports_errors_once(tmp_path):
    """The tools' loader: datasets from the command line, NUM_CLASSES from them, ConfigError."""
    from mayolact.config.config import ConfigError, load_config

    json_file = write_coco(tmp_path)
    name = fresh()
    entry = f"[['{name}', '{json_file}', '{tmp_path}']]"
    cfg = load_config("", ["DATASETS.YOLACT.COCO_JSON", entry, "DATASETS.TRAIN", f"('{name}',)"])
    assert cfg.MODEL.YOLACT.NUM_CLASSES == 3
    with pytest.raises(ConfigError, match="DATASETS.YOLACT.COCO_JSON entry 'x'.*not found"):
        load_config("", ["DATASETS.YOLACT.COCO_JSON", "[['x', 'missing.json', '.']]"])
    with pytest.raises(ConfigError, match="set MODEL.YOLACT.NUM_CLASSES 3 instead"):
        load_config("", ["DATASETS.YOLACT.COCO_JSON", entry, "DATASETS.TRAIN", f"('{name}',)",
                         "MODEL.META_ARCHITECTURE", "YOLACT", "MODEL.YOLACT.NUM_CLASSES", "80",
                         "MODEL.ROI_HEADS.NUM_CLASSES", "3"])


def test_dataset_arguments_register_json_paths(tmp_path):
    json_file = write_coco(tmp_path / "export")
    names = dataset_arguments(["coco_2017_val", str(json_file), "not_yet_registered"])
    assert names == ["coco_2017_val", str(json_file), "not_yet_registered"]
    assert MetadataCatalog.get(str(json_file)).image_root == str(tmp_path / "export")
    assert dataset_classes(str(json_file)) == ["solid", "hollow", "thin"]
    assert dataset_arguments([str(json_file)]) == [str(json_file)]  # again: kept
    other = write_coco(tmp_path / "other")
    with pytest.raises(ValueError, match="--image-root .*nope: not a folder"):
        dataset_arguments([str(other)], image_root=str(tmp_path / "nope"))


def test_absent_coco_mini_still_has_cocos_classes(tmp_path, monkeypatch):
    """Without its files a coco_mini split stays unregistered, but configs naming it (the quick
    configs) still take COCO's 80 classes; a misspelt name gets the closest registered ones."""
    from mayolact.data import datasets

    name = fresh("coco_mini_val")  # a split name of its own: the real ones stay as they are
    monkeypatch.setattr(datasets, "COCO_MINI_SPLITS",
                        {name: ("val2017", "annotations/instances_val2017.json")})
    assert datasets.register_coco_mini(tmp_path / "missing") == []
    assert name not in DatasetCatalog.list()
    assert dataset_classes(name) == list(MetadataCatalog.get("coco_2017_val").thing_classes)
    assert resolve_num_classes(cfg_with(test=[name])) == 80
    assert apply_dataset_config(cfg_with(train=[name])).MODEL.YOLACT.NUM_CLASSES == 80
    with pytest.raises(KeyError, match="did you mean 'coco_2017_val'"):
        dataset_metadata("coco_2017_vall")


def test_demo_names_classes_of_an_unloaded_json_and_survives_an_absent_test_set(tmp_path, caplog):
    """Drawings of a registered COCO json show its class names before it is read; a test set that
    is not on the machine costs the names (with a warning), not the drawing."""
    from mayolact.engine.demo import Demo

    json_file = write_coco(tmp_path)
    name = fresh()
    cfg = cfg_with([(name, str(json_file), str(tmp_path))], test=[name], num_classes=3)
    register_config_datasets(cfg)
    fake = object()  # the predictor is not needed to choose the metadata
    assert Demo(cfg, predictor=fake).metadata.thing_classes == ["solid", "hollow", "thin"]
    with caplog.at_level("WARNING", logger="mayolact.engine.demo"):
        demo = Demo(cfg_with(test=["not_here"], num_classes=3), predictor=fake)
    assert "thing_classes" not in demo.metadata.as_dict()
    assert "'not_here' is not registered: the drawings show class numbers" in caplog.text


# ----------------------------------------------------------------------------------- coco_mini
def write_coco_download(root, ids_per_split, extra_id=999):
    """A COCO 2017 download in miniature: per split a json (with one more image than ``ids``)
    and 16 x 16 JPEGs."""
    import cv2
    import numpy as np

    for split, ids in ids_per_split.items():
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 16, "width": 16, "license": 1}
                  for i in [extra_id, *ids]]
        annotations = [{"id": 100 + k, "image_id": im["id"], "category_id": 3, "iscrowd": 0,
                        "bbox": [2.0, 2.0, 8.0, 8.0], "area": 64.0,
                        "segmentation": [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]]}
                       for k, im in enumerate(images * 2)]  # two per image
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps({
            "info": {"year": 2017}, "licenses": [{"id": 1, "name": "by"}], "images": images,
            "annotations": annotations, "categories": CATEGORIES}))
        (root / split).mkdir(exist_ok=True)
        for im in images:
            cv2.imwrite(str(root / split / im["file_name"]), np.full((16, 16, 3), 90, np.uint8))


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_make_coco_mini_takes_the_listed_images_and_all_their_annotations(tmp_path, link):
    from detectron2.data.datasets.coco import load_coco_json

    from mayolact.data.coco_mini import build_coco_mini

    ids = {"train2017": [5, 3], "val2017": [7]}
    write_coco_download(tmp_path / "coco", ids)
    out = tmp_path / "coco_mini"
    assert build_coco_mini(tmp_path / "coco", out, link=link, image_ids=ids) == {
        "train2017": (2, 4), "val2017": (1, 2)}
    train = json.loads((out / "annotations" / "instances_train2017.json").read_text())
    assert [im["id"] for im in train["images"]] == [5, 3]
    assert sorted(a["image_id"] for a in train["annotations"]) == [3, 3, 5, 5]
    assert train["categories"] == CATEGORIES and train["licenses"][0]["name"] == "by"
    assert sorted(p.name for p in (out / "train2017").iterdir()) == [
        "000000000003.jpg", "000000000005.jpg"]
    assert (out / "val2017" / "000000000007.jpg").is_symlink() == link
    dicts = load_coco_json(str(out / "annotations" / "instances_val2017.json"),
                           str(out / "val2017"))
    assert len(dicts) == 1 and len(dicts[0]["annotations"]) == 2
    # Again: what is there is kept, the result is the same.
    assert build_coco_mini(tmp_path / "coco", out, link=link, image_ids=ids)["train2017"] == (2, 4)


def test_make_coco_mini_checks_the_download_before_writing(tmp_path):
    from mayolact.data.coco_mini import build_coco_mini

    write_coco_download(tmp_path / "coco", {"train2017": [5]})
    out = tmp_path / "coco_mini"
    with pytest.raises(ValueError, match=r"instances_train2017\.json: 1 of coco_mini's 2 image "
                                         r"ids are not in it \(e\.g\. \[6\]\)"):
        build_coco_mini(tmp_path / "coco", out, image_ids={"train2017": [5, 6]})
    (tmp_path / "coco" / "train2017" / "000000000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of coco_mini's train2017 images .*"
                                                r"000000000005\.jpg"):
        build_coco_mini(tmp_path / "coco", out, image_ids={"train2017": [5]})
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json: not found; --coco"):
        build_coco_mini(tmp_path / "coco", out, image_ids={"val2017": [5]})


def test_make_coco_mini_tool_names_what_is_missing(tmp_path, capsys):
    from common import load_tool

    tool = load_tool("make_coco_mini")
    assert tool.main(["--coco", str(tmp_path / "nowhere"), "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "instances_train2017.json: not found" in err


def test_coco_mini_ids_are_coco_minis_and_rebuild_it(coco_mini, tmp_path):
    """The committed id list is coco_mini's; built from coco_mini itself (laid out as a COCO
    download) it gives coco_mini's images and annotations back."""
    from mayolact.data.coco_mini import COCO_MINI_IMAGE_IDS, build_coco_mini

    out = tmp_path / "rebuilt"
    build_coco_mini(coco_mini, out, link=True)
    for split, ids in COCO_MINI_IMAGE_IDS.items():
        name = f"annotations/instances_{split}.json"
        source = json.loads((coco_mini / name).read_text())
        rebuilt = json.loads((out / name).read_text())
        assert sorted(im["id"] for im in source["images"]) == list(ids)
        for key in ("images", "annotations"):
            assert (sorted(rebuilt[key], key=lambda r: r["id"])
                    == sorted(source[key], key=lambda r: r["id"]))
        assert rebuilt["categories"] == source["categories"]


def test_coco_mini_is_looked_for_in_one_place_and_its_absence_says_how_to_build_it(
        tmp_path, monkeypatch):
    from mayolact.data import datasets
    from mayolact.engine.checks import PreflightError, check_datasets_registered

    built, shared = tmp_path / "datasets" / "coco_mini", tmp_path / "shared" / "coco_mini"
    monkeypatch.delenv("MAYOLACT_COCO_MINI", raising=False)
    monkeypatch.setattr(datasets, "COCO_MINI_DEFAULT_ROOTS", (built, shared))
    assert datasets.coco_mini_root() is None
    shared.mkdir(parents=True)
    assert datasets.coco_mini_root() == shared
    built.mkdir(parents=True)
    assert datasets.coco_mini_root() == built  # what tools/make_coco_mini.py writes comes first
    monkeypatch.setenv("MAYOLACT_COCO_MINI", str(shared))
    assert datasets.coco_mini_root() == shared

    name = fresh("coco_mini_train")  # a split name of its own: the real ones stay as they are
    monkeypatch.setattr(datasets, "COCO_MINI_SPLITS",
                        {name: ("train2017", "annotations/instances_train2017.json")})
    with pytest.raises(PreflightError) as info:
        check_datasets_registered("DATASETS.TRAIN", [name])
    message = str(info.value)
    assert message.startswith(f"DATASETS.TRAIN: dataset '{name}' is not registered: coco_mini")
    assert "python tools/make_coco_mini.py --coco /path/to/coco" in message
    assert "\n" not in message
    # A name of one's own: how to register it.
    with pytest.raises(PreflightError, match=r"'my_own_train' is not registered; .*"
                                             r"DATASETS\.YOLACT\.COCO_JSON"):
        check_datasets_registered("DATASETS.TRAIN", ["my_own_train"])
