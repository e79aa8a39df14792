"""End to end on synthetic data: every task, model loading from each source, and the feature cache."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tvts import config
from tvts.data import synthetic
from tvts.engine.export import export_safetensors
from tvts.eval.datasets import classification_data
from tvts.eval.features import EvalDataError, clip_times, features_of
from tvts.eval.formats import write_synthetic_captions
from tvts.eval.loading import LoadError, load_eval_model
from tvts.eval.options import OptionError, parse_options
from tvts.eval.tasks import TASKS, evaluate

ROOT = Path(__file__).resolve().parents[2]
# a tiny v1 model on 32 px frames with a 1-block CLIP text tower (no weights to read)
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "sample.frames_per_window=2",
        "sample.caption_frames=2", "model.sort.heads=2", "data.resize_short=32", "model.text.kind=clip",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.text.output_dim=32",
        "model.text.frozen=false", "model.text.cache=false", "seed=3"]
OPTS = ["batch_size=4", "chunk_size=5", "max_iter=50", "wd_grid=[1e-3, 1e-1]"]


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    out = synthetic.make_downstream(root, 16, 8, seed=0, size=64, workers=1)
    write_synthetic_captions(out)
    return out


V2 = ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube", "model.video.output_dim=32",
      "model.vtc.projection=none"]


def _make_run(run, overrides):
    """A run directory as the trainer leaves it: config.yaml + checkpoints/step_*/model_optim.pt + meta.json."""
    from tvts.models.model import build_model

    cfg = config.load(None, overrides)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict(cfg), sort_keys=False))
    ckpt = run / "checkpoints" / "step_00000002"
    ckpt.mkdir(parents=True)
    torch.manual_seed(7)
    torch.save({"model": build_model(cfg).state_dict()}, ckpt / "model_optim.pt")
    (ckpt / "meta.json").write_text(json.dumps({"step": 2}))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("run"), TINY)


def test_v2_features_use_ln_post_then_proj_for_the_joint_space(downstream, tmp_path):
    run = _make_run(tmp_path / "v2", TINY + V2)
    model = load_eval_model(str(run))
    opts = _opts(model, "frames=4")
    ds = classification_data(downstream, opts)
    feats = features_of(model, ds.eval, ds.video_root, tmp_path, opts, "eval")
    assert feats.cls.shape == (8, 64) and feats.embed.shape == (8, 32)
    torch.testing.assert_close(feats.embed, feats.cls @ model.model.video.proj.detach())
    result = evaluate("recognition", str(run), downstream, tmp_path, parse_options(OPTS + ["frames=4"]), model=model)
    assert result["protocol"]["feature"] == "embed" and result["protocol"]["frames"] == 4


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_end_to_end(task, run_dir, downstream, tmp_path):
    extra = ["eval_list=captions_val.tsv", "dsl=true"] if task == "retrieval" else []
    result = evaluate(task, str(run_dir), downstream, tmp_path, parse_options(OPTS + extra))
    saved = json.loads((tmp_path / f"{task}.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(result["metrics"]))
    assert (tmp_path / f"{task}.md").read_text().startswith(f"### {task}: ")
    assert saved["protocol"]["frames"] == 8 and saved["protocol"]["crop"] == 32
    values = {"features": lambda m: [m["train"]["clips"], m["eval"]["clips"]],
              "linear": lambda m: [m["top1"], m["top5"]], "recognition": lambda m: [m["top1"], m["top5"]],
              "mc": lambda m: [m["top1"]], "v2v": lambda m: [m["R@1"], m["R@10"]],
              "retrieval": lambda m: [m[d][k] for d in ("t2v", "v2t", "t2v+DSL", "v2t+DSL") for k in ("R@1", "R@5", "R@10")]}
    assert all(0.0 <= v <= 100.0 for v in values[task](saved["metrics"]))
    if task == "linear":
        assert "L-BFGS" in saved["protocol"]["probe"] and saved["probe"]["weight_decay"] in (1e-3, 1e-1)
    if task == "features":
        assert saved["metrics"]["train"]["clips"] == 16 and saved["metrics"]["eval"]["clips"] == 8


def test_mc_reads_a_jsonl(run_dir, downstream, tmp_path):
    items = [line.split() for line in (downstream / "val.txt").read_text().splitlines()]
    with open(tmp_path / "val.jsonl", "w") as f:
        for name, _ in items:
            f.write(json.dumps({"clip_name": name[: -len(".webm")], "options": ["a red thing", "it moves"], "answer": 1}) + "\n")
    result = evaluate("mc", str(run_dir), downstream, tmp_path / "out", parse_options(OPTS + [f"eval_list={tmp_path / 'val.jsonl'}"]))
    assert result["table"]["rows"][2] == ["options per item", "2"] and result["data"]["mc"].endswith("val.jsonl")


def _opts(model, *items):
    return parse_options(OPTS + list(items)).resolved(model.cfg)


def test_features_are_deterministic_across_runs_and_batch_sizes(run_dir, downstream, tmp_path):
    model = load_eval_model(str(run_dir))
    ds = classification_data(downstream, _opts(model))
    a = features_of(model, ds.eval, ds.video_root, tmp_path / "a", _opts(model), "eval")
    b = features_of(model, ds.eval, ds.video_root, tmp_path / "b", _opts(model), "eval")
    assert torch.equal(a.cls, b.cls) and torch.equal(a.embed, b.embed)
    for batch in ("batch_size=1", "batch_size=8"):
        c = features_of(model, ds.eval, ds.video_root, tmp_path / batch, _opts(model, batch), "eval")
        torch.testing.assert_close(c.cls, a.cls, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c.embed, a.embed, rtol=1e-5, atol=1e-6)


def test_extraction_resumes_from_finished_chunks(run_dir, downstream, tmp_path):
    model = load_eval_model(str(run_dir))
    opts = _opts(model)
    ds = classification_data(downstream, opts, need_train=True)
    first = features_of(model, ds.train, ds.video_root, tmp_path, opts, "train")
    chunks = sorted(first.directory.glob("chunk_*.safetensors"))
    assert len(chunks) == 4  # 16 clips in chunks of 5
    stamps = {p.name: p.stat().st_mtime_ns for p in chunks}
    chunks[2].unlink()
    again = features_of(model, ds.train, ds.video_root, tmp_path, opts, "train")
    assert torch.equal(again.cls, first.cls)
    assert {p.name: p.stat().st_mtime_ns for p in chunks if p != chunks[2]} == {k: v for k, v in stamps.items() if k != chunks[2].name}
    rechunked = features_of(model, ds.train, ds.video_root, tmp_path, _opts(model, "chunk_size=3"), "train")
    assert rechunked.directory == first.directory and torch.equal(rechunked.cls, first.cls)  # keeps its chunking
    other = features_of(model, ds.train, ds.video_root, tmp_path, _opts(model, "frames=4"), "train")
    assert other.directory != first.directory  # a changed protocol never reuses features


def test_single_frame_sees_no_motion(run_dir, downstream, tmp_path):
    np.testing.assert_allclose(clip_times(0.0, 2.0, 4, single_frame=True), [1.0] * 4)
    np.testing.assert_allclose(clip_times(0.0, 2.0, 4), [0.25, 0.75, 1.25, 1.75])
    model = load_eval_model(str(run_dir))
    ds = classification_data(downstream, _opts(model))
    moving = features_of(model, ds.eval[:2], ds.video_root, tmp_path, _opts(model), "eval")
    still = features_of(model, ds.eval[:2], ds.video_root, tmp_path, _opts(model, "single_frame=true"), "eval")
    assert still.meta["protocol"]["sampling"] == "middle frame repeated" and not torch.equal(still.cls, moving.cls)


def test_a_missing_clip_names_its_list_line(run_dir, downstream, tmp_path):
    model = load_eval_model(str(run_dir))
    (tmp_path / "val.txt").write_text("dsv000000.webm 0\nmissing.webm 1\n")
    opts = _opts(model, f"eval_list={tmp_path / 'val.txt'}", f"video_root={downstream / 'videos'}")
    ds = classification_data(downstream, opts)
    with pytest.raises(EvalDataError, match=r"val\.txt:2: missing_video"):
        features_of(model, ds.eval, ds.video_root, tmp_path, opts, "eval")


def test_export_and_random_init_load_the_expected_weights(run_dir, tmp_path):
    from tvts.runtime import seed_everything
    from tvts.models.model import build_model

    from_run = load_eval_model(str(run_dir))
    export_safetensors(run_dir, tmp_path / "export")
    from_export = load_eval_model(str(tmp_path / "export"))
    assert from_export.fingerprint == from_run.fingerprint and from_export.joint_space
    (tmp_path / "export" / "heads.safetensors").unlink()
    video_only = load_eval_model(str(tmp_path / "export"))
    assert not video_only.joint_space and video_only.fingerprint != from_run.fingerprint  # no video VTC head
    with pytest.raises(LoadError, match="needs the text tower"):
        evaluate("recognition", str(tmp_path / "export"), tmp_path, tmp_path, model=video_only)

    from tvts.engine.export import consolidated_state_dict
    from tvts.models.convert import write_checkpoint

    no_sorter = {k: v for k, v in consolidated_state_dict(run_dir).items() if not k.startswith("sorter.")}
    weights = write_checkpoint(no_sorter, tmp_path / "converted.safetensors")
    with pytest.raises(LoadError, match="needs the config"):
        load_eval_model(str(weights))
    from_file = load_eval_model(str(weights), config=str(run_dir / "config.yaml"))
    assert from_file.fingerprint == from_run.fingerprint and from_file.joint_space

    random = load_eval_model(f"random:{run_dir}")
    cfg = config.load(run_dir / "config.yaml")
    seed_everything(cfg.seed)
    reference = build_model(cfg).video.state_dict()
    assert all(torch.equal(random.model.video.state_dict()[k], v) for k, v in reference.items())
    assert random.fingerprint != from_run.fingerprint
    with pytest.raises(LoadError, match="neither a checkpoint"):
        load_eval_model(str(tmp_path))


def test_bad_options_name_the_key():
    with pytest.raises(OptionError, match="frmaes: unknown evaluation option; did you mean frames"):
        parse_options(["frmaes=8"])
    with pytest.raises(OptionError, match="dsl: expected true or false"):
        parse_options(["dsl=maybe"])
    assert parse_options(["wd_grid=[1e-3, 1]", "template=a video of {}"]).wd_grid == [1e-3, 1.0]


def test_cli_writes_json_and_markdown(run_dir, downstream, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "launch" / "evaluate.py"), "--task", "v2v", "--checkpoint", str(run_dir),
                          "--data", str(downstream), "--out", str(tmp_path), *OPTS], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| R@1 |" in res.stdout and json.loads((tmp_path / "v2v.json").read_text())["task"] == "v2v"


def test_bench_synthetic_on_given_runs(run_dir, downstream, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_synthetic", ROOT / "launch" / "bench_synthetic.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    evals = [x for o in OPTS for x in ("--eval", o)]
    assert bench.main(["--tvts", str(run_dir), "--vtc", str(run_dir), "--data", str(downstream), "--out", str(tmp_path), *evals]) == 0
    result = json.loads((tmp_path / "bench_synthetic.json").read_text())
    (seed,) = result["per_seed"]  # given runs are one draw, whatever --seeds says
    one = result["per_seed"][seed]
    assert list(one["rows"]) == ["tvts", "random", "vtc", "single_frame"]
    assert result["chance_top1"] == pytest.approx(12.5)
    # the same run given as TVTS and as VTC only: the paired difference is exactly zero
    assert result["summary"]["tvts_minus_vtc"]["per_seed"] == [0.0]
    assert result["summary"]["rows"]["tvts"]["mean"] == one["rows"]["tvts"]["linear"]["top1"]
    printed = capsys.readouterr().out
    assert "| TVTS (sort + VTC) |" in printed and "| TVTS - VTC only (paired by seed) |" in printed


def test_bench_summary_pools_seeds():
    from tvts.eval.bench import ROWS, summarize

    def seed_result(top1: dict, sort_acc: float) -> dict:
        return {"rows": {k: {"linear": {"top1": top1[k]}, "v2v": {"R@1": 10.0 * (i + 1)},
                             "run": {} if k == "random" else {"val_sort_acc": sort_acc}} for i, k in enumerate(ROWS)}}

    summary = summarize({
        1: seed_result({"tvts": 62.0, "random": 36.0, "vtc": 60.0, "single_frame": 28.0}, 0.6),
        0: seed_result({"tvts": 56.0, "random": 35.0, "vtc": 60.0, "single_frame": 27.0}, 0.5),
        2: seed_result({"tvts": 61.0, "random": 34.0, "vtc": 59.0, "single_frame": 29.0}, 0.7),
    })
    assert summary["seeds"] == [0, 1, 2]
    tvts = summary["rows"]["tvts"]
    assert tvts["top1"] == [56.0, 62.0, 61.0]  # seed order, not insertion order
    assert tvts["mean"] == pytest.approx(59.6667, abs=1e-4) and tvts["sd"] == pytest.approx(3.2146, abs=1e-4)
    assert (tvts["min"], tvts["max"]) == (56.0, 62.0) and tvts["val_sort_acc_mean"] == pytest.approx(0.6)
    assert summary["rows"]["random"]["val_sort_acc_mean"] is None
    paired = summary["tvts_minus_vtc"]
    assert paired["per_seed"] == [-4.0, 2.0, 2.0] and paired["mean"] == pytest.approx(0.0)
    assert paired["sd"] == pytest.approx(12 ** 0.5) and (paired["wins"], paired["n"]) == (2, 3)
    assert ("| TVTS - VTC only (paired by seed) | 0.00 | 3.46 | -4.00 to +2.00 | -4.00 / +2.00 / +2.00 | "
            "TVTS ahead on 2 of 3 |") in summary["table"]
    one = summarize({0: seed_result({"tvts": 56.0, "random": 35.0, "vtc": 60.0, "single_frame": 27.0}, 0.5)})
    assert one["rows"]["tvts"]["sd"] is None and "| 56.00 | - | 56.00 to 56.00 |" in one["table"]


def test_bench_pretrain_jobs_command_lines(tmp_path):
    from tvts.eval.bench import pretrain_jobs

    jobs = pretrain_jobs([0, 3], tmp_path, "configs/demo.yaml", ["model.sort_weight=8", "seed=9"], steps=100, threads=1)
    assert [j.name for j in jobs] == ["tvts_seed0", "vtc_seed0", "tvts_seed3", "vtc_seed3"]
    vtc3 = jobs[3]
    assert vtc3.run_dir == tmp_path / "seed3" / "vtc" and vtc3.log == tmp_path / "seed3" / "vtc.log"
    cmd = vtc3.command
    assert cmd[1].endswith("launch/pretrain.py") and cmd[2:4] == ["--config", "configs/demo.yaml"]
    # later key=value overrides win: the job's seed and VTC's sort_weight=0 come after the user's
    assert cmd.index("seed=3") > cmd.index("seed=9") and cmd.index("model.sort_weight=0") > cmd.index("model.sort_weight=8")
    assert "train.threads=1" in cmd and cmd[-1] == "train.steps=100" and f"train.run_dir={vtc3.run_dir}" in cmd
    cfg = config.load(ROOT / "configs" / "demo.yaml", cmd[4:])
    assert (cfg.seed, cfg.model.sort_weight, cfg.train.threads, cfg.train.steps) == (3, 0.0, 1, 100)
    assert "model.sort_weight=0" not in jobs[2].command
    only_vtc = pretrain_jobs([1], tmp_path, "c.yaml", [], skip=["tvts"])
    assert [j.name for j in only_vtc] == ["vtc_seed1"] and not any("threads" in c for c in only_vtc[0].command)


def test_bench_run_jobs_stops_starting_after_a_failure(tmp_path, capsys):
    from tvts.eval.bench import PretrainJob, run_jobs

    def job(name, code):
        return PretrainJob(name, tmp_path / name, tmp_path / f"{name}.log",
                           [sys.executable, "-c", f"print('hello from {name}'); raise SystemExit({code})"])

    run_jobs([job("a", 0), job("b", 0)], at_once=2)
    assert (tmp_path / "a.log").read_text() == "hello from a\n"
    with pytest.raises(SystemExit, match=r"\[bad\] launch/pretrain.py exited with 3; last lines of .*bad.log:\nhello from bad"):
        run_jobs([job("bad", 3), job("never", 0)], at_once=1)
    assert not (tmp_path / "never.log").exists()  # queued behind the failure: never started


def test_wilson_interval():
    from tvts.eval.bench import wilson_interval

    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(1.0, 10)[1] == 1.0


def test_kinetics_layout_is_found_under_prompt(run_dir, downstream, tmp_path):
    names = json.loads((downstream / "labels.json").read_text())
    by_id = {i: n for n, i in names.items()}
    (tmp_path / "prompt").mkdir()
    (tmp_path / "prompt" / "label2id.json").write_text(json.dumps(names))
    rows = [line.split() for line in (downstream / "val.txt").read_text().splitlines()]
    (tmp_path / "prompt" / "testlist01_new.tsv").write_text(
        "".join(f"{by_id[int(label)]}/{video}\t{by_id[int(label)]}\n" for video, label in rows))
    (tmp_path / "videos").mkdir()
    for video, label in rows:
        (tmp_path / "videos" / by_id[int(label)]).mkdir(exist_ok=True)
        os.symlink(downstream / "videos" / video, tmp_path / "videos" / by_id[int(label)] / video)
    result = evaluate("recognition", str(run_dir), tmp_path, tmp_path / "out", parse_options(OPTS))
    assert result["data"]["eval_list"].endswith("prompt/testlist01_new.tsv") and result["table"]["rows"][2][1] == "8 / 8"
