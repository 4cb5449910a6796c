"""`make reproduce`: sharded = unsharded, the dry run's pieces, notebooks, bad input; bench-gpu.

The evaluation steps run the real `fdcam.paper` runs on stand-in trees (`scripts.standins`),
with VGG16 swapped for a tiny CNN at 32×32 pixels so that a whole run takes seconds.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import yaml

from fdcam.errors import FdcamError
from fdcam.evaluation.imagenet import ImageNetVal
from fdcam.evaluation.results import KEY
from fdcam.evaluation.results_file import read_results
from fdcam.evaluation.voc import VOC2007, VOC_CLASSES
from fdcam.models import LoadedModel, imagenet_categories
from fdcam.paper import settings, setups
from scripts import bench_gpu, bench_parts, reproduce_plan, reproduce_steps
from scripts.reproduce import build_parser, main, run
from scripts.reproduce_plan import (
    DRY_RESULTS,
    PAPER_RESULTS,
    SHARD_STEPS,
    STEPS,
    Plan,
    State,
    make_plan,
)
from scripts.reproduce_steps import check_shard_records
from scripts.standins import StandIns, write_standins
from tests.models import tiny_sequential

METHODS = ("gradcam", "fdcam")
TINY_INPUT = (32, 32)


def plan_for(*argv: str) -> Plan:
    return make_plan(build_parser().parse_args(list(argv)))


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    return write_standins(tmp_path_factory.mktemp("standins"), n_imagenet=5, n_voc_train=2,
                          n_voc_val=5, content="noise")


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """VGG16 (ImageNet and VOC) → tiny CNNs at 32×32, wherever experiments loads them."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def load_model(name: str, *, pretrained: bool = True,
                   device: str | torch.device = "cpu") -> LoadedModel:
        assert name == "vgg16" and not pretrained  # a dry run never asks for the weights
        return LoadedModel("tiny", tiny_sequential(1000, seed=0), "3", mean, std,
                           imagenet_categories(), TINY_INPUT)

    def voc_loaded_model(checkpoint: str | Path, device: str | torch.device = "cpu"
                         ) -> LoadedModel:
        return LoadedModel("tiny-voc", tiny_sequential(20, seed=1), "3", mean, std,
                           list(VOC_CLASSES), TINY_INPUT)

    monkeypatch.setattr("fdcam.models.load_model", load_model)
    monkeypatch.setattr("fdcam.paper.finetune.voc_loaded_model", voc_loaded_model)
    monkeypatch.setenv("FDCAM_OFFLINE", "1")  # restored after the test (run() sets it)


def dry_plan(trees: StandIns, tmp_path: Path, results: str, **changes: object) -> Plan:
    checkpoint = tmp_path / "voc.pt"
    checkpoint.write_bytes(b"weights made elsewhere")  # tiny_models ignores the contents
    plan = replace(plan_for("--dry-run"), standins_dir=trees.imagenet_val.parents[4],
                   results_dir=tmp_path / results, voc_checkpoint=checkpoint, n_images=5,
                   faithfulness_methods=METHODS, pointing_methods=METHODS,
                   steps=("faithfulness", "pointing"), scratch=tmp_path / "scratch",
                   notebooks_out=tmp_path / "notebooks-out")
    return replace(plan, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ sharding


def test_sharded_run_merged_equals_unsharded_run(trees: StandIns, tmp_path: Path,
                                                 tiny_models: None) -> None:
    whole = dry_plan(trees, tmp_path, "whole", steps=("faithfulness", "pointing", "merge"))
    run(whole)
    for i in range(3):
        run(dry_plan(trees, tmp_path, "sharded", shard=(i, 3)))
    sharded = dry_plan(trees, tmp_path, "sharded", steps=("merge",))
    run(sharded)

    shard_files = sorted(p.name for p in (tmp_path / "sharded").glob("*.shard*of3.csv"))
    assert len(shard_files) == 6  # faithfulness and pointing, three shards each
    for name in ("faithfulness.csv", "pointing.csv"):
        expected = read_results(tmp_path / "whole" / name)
        merged = read_results(tmp_path / "sharded" / name)
        expected = expected.sort_values(KEY, kind="stable").reset_index(drop=True)
        assert not expected.empty and expected["error"].isna().all()
        pd.testing.assert_frame_equal(merged, expected)
    faithfulness = read_results(tmp_path / "whole" / "faithfulness.csv")
    assert len(faithfulness) == 5 * len(METHODS)  # every image, every method, top-1 class
    pointing = read_results(tmp_path / "whole" / "pointing.csv")
    pairs = sum(len(set(VOC2007(trees.voc_root, "val").annotation(i)["labels"]))
                for i in range(5))
    assert len(pointing) == pairs * len(METHODS)  # every labelled class of every image

    # A rerun finds every row done: nothing is appended.
    before = (tmp_path / "whole" / "faithfulness.csv").read_bytes()
    run(whole)
    assert (tmp_path / "whole" / "faithfulness.csv").read_bytes() == before


def test_merge_refuses_shards_made_with_different_weights(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, sha in enumerate(("aa", "aa", "bb")):
        shard_record(shards, "pointing", i, 3, voc_checkpoint_sha256=sha)
    with pytest.raises(FdcamError, match="different fine-tuned weights") as caught:
        check_shard_records(tmp_path)
    assert "\n" not in str(caught.value)
    shard_record(shards, "pointing", 2, 3, voc_checkpoint_sha256="aa")
    check_shard_records(tmp_path)


def shard_record(folder: Path, step: str, index: int, count: int, finished: bool = True,
                 **extra: object) -> Path:
    path = folder / f"{step}-{index}-of-{count}.json"
    path.write_text(json.dumps({"step": step, "shard": [index, count], "finished": finished,
                                **extra}))
    return path


def test_merge_refuses_missing_mixed_unfinished_or_corrupt_shards(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    shard_record(shards, "faithfulness", 0, 1)  # an unsharded run's record: not a shard
    for i in (0, 2):
        shard_record(shards, "faithfulness", i, 3)
    cases = []
    with pytest.raises(FdcamError) as caught:
        check_shard_records(tmp_path)
    cases.append(str(caught.value))
    shard_record(shards, "faithfulness", 1, 3, finished=False)
    with pytest.raises(FdcamError) as caught:
        check_shard_records(tmp_path)
    cases.append(str(caught.value))
    shard_record(shards, "faithfulness", 1, 3)
    check_shard_records(tmp_path)  # a complete, finished set
    shard_record(shards, "faithfulness", 1, 2)
    with pytest.raises(FdcamError) as caught:
        check_shard_records(tmp_path)
    cases.append(str(caught.value))
    (shards / "faithfulness-1-of-2.json").write_bytes(b'{"step": "faith')  # cut by a kill
    with pytest.raises(FdcamError) as caught:
        check_shard_records(tmp_path)
    cases.append(str(caught.value))
    assert cases == [
        f"faithfulness shard 1/3 has not run in {tmp_path}; run SHARD=1/3 before the merge",
        f"faithfulness shard 1/3 in {tmp_path} has not finished (killed, or still running); "
        f"rerun it before the merge",
        f"the faithfulness shards in {tmp_path} come from runs split 2 and 3 ways; merge one "
        f"set (move the other's CSVs and records away)",
        f"{shards / 'faithfulness-1-of-2.json'} is not a shard record (expected the JSON "
        f"written by a --shard run: step, shard [i, n], finished); rerun that shard or "
        f"delete the file"]


def test_a_binary_run_record_is_one_line(tmp_path: Path) -> None:
    (tmp_path / reproduce_plan.RUN_RECORD).write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    plan = replace(plan_for("--dry-run"), results_dir=tmp_path)
    with pytest.raises(FdcamError, match=r"reproduce\.json is not a reproduce record "
                                         r"\(expected a JSON object") as caught:
        reproduce_plan.check_plan(plan)
    assert "\n" not in str(caught.value)


def test_row_counts_skip_the_identity_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("# fdcam-results/2 {}\nimage,method\na,b\nc,d\n")
    assert reproduce_steps._rows(path) == 2
    path.write_text("image,method\na,b\n")
    assert reproduce_steps._rows(path) == 1
    assert reproduce_steps._rows(tmp_path / "missing.csv") == 0


def test_steps_of_a_sharded_and_of_a_full_run() -> None:
    assert plan_for("--shard", "1/4").steps == SHARD_STEPS
    assert plan_for("--shard", "1/4").shard == (1, 4)
    assert plan_for().steps == tuple(s for s in STEPS if s != "standins")
    assert plan_for("--steps", "book,merge,notebooks").steps == ("merge", "notebooks", "book")
    assert plan_for("--dry-run", "--shard", "0/2").steps[0] == "standins"


# ------------------------------------------------------------------------------ dry run


def test_dry_run_plan_is_offline_cpu_and_kept_apart() -> None:
    plan = plan_for("--dry-run")
    assert plan.dry_run and plan.device == "cpu" and plan.steps == STEPS
    assert plan.results_dir == DRY_RESULTS != PAPER_RESULTS
    assert plan.notebooks_out != reproduce_plan.ROOT / "book"
    assert plan.book_source != reproduce_plan.ROOT
    assert plan.faithfulness_methods is None and plan.pointing_methods is None  # setup's


def test_dry_run_standins_parse_and_reach_the_notebooks(tmp_path: Path) -> None:
    plan = replace(plan_for("--dry-run"), standins_dir=tmp_path / "standins")
    reproduce_steps.step_standins(plan, State())
    imagenet_val, voc_root = reproduce_steps._inputs(plan)
    val = ImageNetVal(imagenet_val)
    assert len(val) >= plan.n_images  # type: ignore[operator]
    assert len(VOC2007(voc_root, "train")) == reproduce_plan.DRY_VOC_TRAIN
    assert len(VOC2007(voc_root, "val")) == reproduce_plan.DRY_VOC_VAL
    parameters = reproduce_steps.notebook_parameters(plan, State())
    assert parameters["profile"] == "paper" and parameters["dry_run"] is True
    assert parameters["imagenet_val"] == str(imagenet_val)
    assert parameters["voc_root"] == str(voc_root)
    assert parameters["results_dir"] == str(DRY_RESULTS)


def test_a_dry_run_never_writes_into_real_results(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / reproduce_plan.RUN_RECORD).write_text(json.dumps({"kind": "paper"}))
    plan = replace(plan_for("--dry-run"), results_dir=real)
    with pytest.raises(FdcamError, match="holds paper results") as caught:
        reproduce_plan.check_plan(plan)
    assert "\n" not in str(caught.value)
    with pytest.raises(FdcamError, match="is the paper's results folder"):
        plan_for("--dry-run", "--results-dir", str(PAPER_RESULTS))


def _notebook(path: Path, parameters: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def test_notebook_step_executes_skips_and_keeps_the_old_output(trees: StandIns,
                                                               tmp_path: Path) -> None:
    sources = tmp_path / "notebooks"
    sources.mkdir()
    _notebook(sources / "05_faithfulness.ipynb",
              'profile = "offline"\nresults_dir = None\ndry_run = False\nn_images = None',
              'assert profile == "paper" and dry_run and n_images == 5\nprint(results_dir)')
    _notebook(sources / "01_channel_similarity.ipynb", 'profile = "offline"', "print(1)")
    plan = dry_plan(trees, tmp_path, "results", notebooks_in=sources)
    state = State()
    reproduce_steps.step_notebooks(plan, state)
    executed = nbformat.read(plan.notebooks_out / "05_faithfulness.ipynb", as_version=4)
    assert str(plan.results_dir) in executed.cells[-1].outputs[0]["text"]
    assert not (plan.notebooks_out / "01_channel_similarity.ipynb").exists()
    assert state.not_dry_runnable == ["01_channel_similarity"]
    assert "06_discriminability" in state.missing_notebooks
    assert "05_faithfulness" not in state.missing_notebooks

    # A failing notebook leaves the previous output in place and its own in scratch.
    _notebook(sources / "05_faithfulness.ipynb", "dry_run = False", "raise ValueError('x')")
    before = (plan.notebooks_out / "05_faithfulness.ipynb").read_bytes()
    with pytest.raises(FdcamError, match="1 notebook") as caught:
        reproduce_steps.step_notebooks(plan, State())
    assert "\n" not in str(caught.value)
    assert (plan.notebooks_out / "05_faithfulness.ipynb").read_bytes() == before
    assert (plan.scratch / "05_faithfulness.ipynb").is_file()


# ------------------------------------------------------------------------------ bad input


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_missing_imagenet_val_is_one_line_naming_it(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    err = _one_line_error(capsys, "--imagenet-val", str(missing), "--voc-root", str(tmp_path))
    assert "IMAGENET_VAL" in err and str(missing) in err and "does not exist" in err
    assert "IMAGENET_VAL is not set" in _one_line_error(capsys, "--voc-root", str(tmp_path))


def test_incomplete_inputs_are_caught_before_any_work(trees: StandIns, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The full run needs all 2,000 manifest images; the first five are enough with N_IMAGES.
    err = _one_line_error(capsys, "--imagenet-val", str(trees.imagenet_val), "--results-dir",
                          str(tmp_path / "r"))
    assert "IMAGENET_VAL=" in err and "1995 of the 2000 images" in err
    err = _one_line_error(capsys, "--imagenet-val", str(trees.imagenet_val), "--n-images", "5",
                          "--results-dir", str(tmp_path / "r"))
    assert "VOC_ROOT is not set" in err
    err = _one_line_error(capsys, "--imagenet-val", str(trees.imagenet_val), "--n-images", "5",
                          "--voc-root", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert "VOC_ROOT=" in err and "not a VOC2007 tree" in err
    assert not (tmp_path / "r").exists()  # nothing was written


@pytest.mark.parametrize(("argv", "message"), [
    (["--shard", "4/4"], "SHARD i/n needs 0 <= i < n"),
    (["--shard", "two"], "SHARD must look like i/n"),
    (["--steps", "faithfulness,tables"], "unknown step 'tables'"),
    (["--steps", "standins"], "belongs to the dry run"),
    (["--device", "tpu"], "device must be 'cpu' or 'cuda' (or 'cuda:N'); got 'tpu'"),
])
def test_bad_arguments_are_one_line_errors(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert message in _one_line_error(capsys, *argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "no CUDA device" in _one_line_error(capsys, "--device", "cuda")
    assert bench_gpu.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# ------------------------------------------------------------------------------ bench-gpu


def test_bench_projection_multiplies_per_image_costs_by_the_paper_counts() -> None:
    parts = {key: bench_parts.Part(key, [1.0])
             for key in (*bench_gpu.TABLE_I_METHODS, *bench_gpu.VARIANTS)}
    parts.update({f"voc:{m}": bench_parts.Part(m, [4.0]) for m in bench_gpu.TABLE_II_METHODS})
    parts["insdel"] = bench_parts.Part("insdel", [2.0])
    parts["finetune"] = bench_parts.Part("finetune", [0.5])
    parts["forward"] = bench_parts.Part("forward", [0.25])
    parts["decode"] = bench_parts.Part("decode", [0.01])
    projection = bench_gpu.project(parts, pairs=10, voc_classes=2)
    assert len(projection.faithfulness) == 13
    assert all(v == 2000 * 3.0 for v in projection.faithfulness.values())
    assert all(v == 10 * 2.0 for v in projection.pointing.values())
    compute, loading = 10 * (2501 * 0.5 + 2510 * 0.25), 10 * 5011 * 0.01
    assert projection.finetune == pytest.approx(compute + loading)  # decoded in turn
    assert projection.decoding == pytest.approx(4510 * 0.01)
    loaders = bench_gpu.project(parts, pairs=10, voc_classes=2, workers=8)
    assert loaders.faithfulness == projection.faithfulness
    assert loaders.finetune == pytest.approx(max(compute, loading / 8))  # decoding overlaps
    assert loaders.decoding == projection.decoding
    parts["scorecam"].error = "OutOfMemoryError"
    assert math.isnan(bench_gpu.project(parts, pairs=10, voc_classes=2).total)


def test_bench_uses_the_experiments_settings() -> None:
    from fdcam.baselines import batch_options

    for device in ("cpu", "cuda"):
        for method in ("scorecam", "groupcam", "fdcam"):
            assert bench_parts.pipeline_options(method, torch.device(device)) == \
                batch_options(method, device)
    from fdcam.evaluation.faithfulness import curve_batch_size

    assert setups.Setup.batch_size is None  # the metrics' default for the device
    for device in ("cpu", "cuda"):
        assert bench_parts.pipeline_metric_batch(device) == curve_batch_size(device)
    assert set(bench_gpu.TABLE_II_METHODS) == set(settings.TABLE_METHODS["II"])
    faithfulness = {m for t in ("I", "III", "IV") for m in settings.TABLE_METHODS[t]}
    assert faithfulness == {*bench_gpu.TABLE_I_METHODS, *bench_gpu.VARIANTS}


def test_voc_pairs_are_counted_from_a_tree(trees: StandIns) -> None:
    pairs, source = bench_gpu.voc_pairs(trees.voc_root)
    voc = VOC2007(trees.voc_root, "val")
    assert pairs == sum(len(set(voc.annotation(i)["labels"])) for i in range(len(voc)))
    assert "counted" in source
    assumed, source = bench_gpu.voc_pairs(None)
    assert assumed == pytest.approx(2510 * 1.46) and "assumed" in source


def test_make_passes_a_path_with_an_apostrophe_intact(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    odd = tmp_path / "it's a \"folder\""
    dry = subprocess.run(["make", "-n", "-s", "reproduce", "DRY_RUN=1", f"RESULTS_DIR={odd}",
                          "STEPS=merge"], cwd=reproduce_plan.ROOT, capture_output=True, text=True,
                         check=True).stdout
    command = dry[dry.index("-m scripts.reproduce") + len("-m scripts.reproduce"):]
    # the shell parses the command exactly as make would run it; printf shows each word
    words = subprocess.run(["bash", "-c", "printf '%s\\n' " + command], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert words[words.index("--results-dir") + 1] == str(odd)


def test_the_book_step_finds_mathjax_where_make_mathjax_puts_it(tmp_path: Path) -> None:
    # The book step's check reads the location from _config.yml, the Makefile writes it: a
    # tree laid out as `make mathjax` lays it out passes, MathJax 2's entry file does not.
    shutil.copy2(reproduce_plan.ROOT / "_config.yml", tmp_path / "_config.yml")
    unpacked = tmp_path / "_build" / "mathjax" / "mathjax"
    unpacked.mkdir(parents=True)
    (unpacked / "MathJax.js").write_text("// MathJax 2\n")
    with pytest.raises(FdcamError, match=r"^MathJax is not at _build/mathjax/mathjax/tex-chtml"):
        reproduce_steps.check_mathjax(tmp_path)
    (unpacked / "tex-chtml.js").write_text("// MathJax 3\n")
    reproduce_steps.check_mathjax(tmp_path)


def test_makefile_writes_mathjax_where_the_book_loads_it() -> None:
    makefile = (reproduce_plan.ROOT / "Makefile").read_text()
    written = re.search(r"^MATHJAX := (\S+)$", makefile, re.M)
    assert written, "the Makefile names its MathJax script in MATHJAX"
    loaded = reproduce_steps.mathjax_script(reproduce_plan.ROOT)
    assert loaded == reproduce_plan.ROOT / written.group(1)


def test_the_dry_run_book_source_has_what_the_config_loads(tmp_path: Path) -> None:
    """The dry run builds the book from a copy: every local Sphinx extension and static
    folder that _config.yml names must be in it (book/_ext was missing, and the build failed
    after every notebook had run)."""
    plan = replace(plan_for("--dry-run"), notebooks_out=tmp_path / "executed",
                               book_source=tmp_path / "source")
    plan.notebooks_out.mkdir()
    (plan.notebooks_out / "01_channel_similarity.ipynb").write_text("{}")
    source = reproduce_steps._dry_book_source(plan)
    config = yaml.safe_load((source / "_config.yml").read_text())
    for folder in config["sphinx"]["local_extensions"].values():
        assert (source / folder).is_dir(), folder
        assert list((source / folder).glob("*.py"))
    for path in (reproduce_plan.ROOT / "book").iterdir():
        if path.suffix != ".ipynb" and path.name != "__pycache__":
            assert (source / "book" / path.name).exists(), path.name
    assert [p.name for p in (source / "book").glob("*.ipynb")] == ["01_channel_similarity.ipynb"]
