"""Fine-tuning (tvts/eval/finetune.py): it trains, tests multi-view as computed by hand, resumes bitwise, decays the
lr layer by layer as specified, reads the SSV2 / Kinetics release annotations, and bad input is one line."""
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
from tvts.data.augment import normalize_video
from tvts.engine.distributed import DistInfo
from tvts.engine.build import build_strategy
from tvts.errors import cli
from tvts.eval import finetune_data
from tvts.eval.finetune import Finetuner, VideoClassifier, compose, load_recipe, merge_views, score_metrics
from tvts.eval.finetune_data import Mixup, StepBatches, ViewClips, crop_offsets, view_times
from tvts.models.param_groups import param_groups
from tvts.models.video import VideoEncoder

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = str(ROOT / "launch" / "finetune.py")
RECIPE = ROOT / "configs" / "finetune_demo.yaml"  # the launcher's default; overridden below where it matters
# a tiny v1 encoder (atto: width 64, depth 2) on 8 frames of 32 px; a 1-block CLIP text tower (no weights to read)
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "sample.frames_per_window=2",
        "sample.caption_frames=2", "model.sort.heads=2", "data.resize_short=32", "model.text.kind=clip",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.text.output_dim=32",
        "model.text.frozen=false", "model.text.cache=false", "seed=3"]


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    """A separable set in the SSV2 list layout: 2 s clips of 48 x 64 px noise, dark (class 0) or bright (class 1);
    12 training and 4 evaluation clips, balanced."""
    root = tmp_path_factory.mktemp("ft_data")
    (root / "videos").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        lines = []
        for i in range(n):
            label = i % 2
            frames = rng.integers(0, 80, (16, 48, 64, 3)) + (130 if label else 30)
            synthetic.encode(frames.astype(np.uint8), root / "videos" / f"{split}{i}.mp4", fps=8)
            lines.append(f"{split}{i}.mp4 {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "labels.json").write_text(json.dumps({"dark": 0, "bright": 1}))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ft_cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(config.load(None, TINY))))
    return path


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()  # train.threads=1 below sets the process-wide count
    yield
    torch.set_num_threads(threads)


def _args(tiny, downstream, run, *extra):
    return [f"finetune.init=random:{tiny}", f"finetune.data={downstream}", f"train.run_dir={run}", "finetune.workers=0",
            "train.threads=1", "train.micro_batch=8", "train.log_every=1", "finetune.test_clips=2",
            "finetune.test_crops=1", *extra]


def _losses(run: Path) -> dict:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["step"], {}).update({k: v for k, v in rec.items() if k in ("loss", "val/top1", "val/loss")})
    return out


def test_trains_and_tests_multi_view_as_by_hand(tiny, downstream, tmp_path):
    recipe = load_recipe(None, _args(tiny, downstream, tmp_path / "run", "train.steps=8", "optim.lr=1e-3",
                                     "finetune.label_smoothing=0", "finetune.mixup=0", "finetune.cutmix=0",
                                     "finetune.test_crops=3"))
    runner = Finetuner(recipe, DistInfo())
    result = runner.run()
    logged = _losses(tmp_path / "run")
    first, last = logged[1]["loss"], np.mean([logged[s]["loss"] for s in (6, 7, 8)])
    assert first > 0.6 and last < 0.25 * first  # from about ln 2 (measured 0.76 -> 0.15)
    # the multi-view score of every clip, recomputed view by view from the trained model
    model = runner.strategy.module.eval()
    clips = ViewClips(runner.lists.eval, runner.lists.video_root, 8, 32, 32, "imagenet", clips=2, crops=3)
    scores = []
    with torch.no_grad():
        for i in range(len(clips)):
            views = clips[i][1]
            assert views.shape == (6, 8, 3, 32, 32)  # 2 temporal x 3 spatial views, averaged below
            assert views.dtype == torch.uint8  # normalised on the device: by the strategy in the run, by hand here
            scores.append(torch.stack([model(normalize_video(v[None])).logits[0].softmax(-1) for v in views]).mean(0))
    scores = torch.stack(scores).double().numpy()
    labels = np.array([it.label for it in runner.lists.eval])
    top1 = 100.0 * np.mean(scores.argmax(1) == labels)
    assert result["metrics"]["top1"] == pytest.approx(top1, abs=1e-9) and top1 == 100.0
    assert json.loads((tmp_path / "run" / "finetune.json").read_text())["metrics"] == result["metrics"]
    assert result["table"]["rows"][2][1] == "2 clips x 3 crops, softmax averaged"


def test_merge_and_topk_against_a_hand_computation():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0, -2.0, -3.0], [0.0, 3.0, 0.0, 0.0, 0.0, 0.0]],
                           [[0.0, 0.0, 0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]])  # 2 clips x 2 views x 6
    e = np.exp(logits.numpy())
    by_hand = (e / e.sum(-1, keepdims=True)).mean(1)
    merged = merge_views(logits, "softmax")
    np.testing.assert_allclose(merged.numpy(), by_hand, rtol=1e-6)
    assert torch.equal(merge_views(logits, "logits"), logits.mean(1))  # official v1's merge
    # clip 0: view 0 says class 0 (p 0.63), view 1 class 1 (p 0.80): their mean gives class 1
    assert by_hand[0].argmax() == 1 and by_hand[1].argmax() == 5
    labels = [0, 5]
    m = score_metrics(merged.double().numpy(), labels)
    assert m["top1"] == 50.0 and m["top5"] == 100.0  # clip 0: class 0 is second of six
    assert m["loss"] == pytest.approx(-np.mean(np.log([by_hand[0, 0], by_hand[1, 5]])), rel=1e-9)
    assert score_metrics(np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]), [0])["top5"] == 0.0  # rank 6 of 6


def test_view_times_and_crops():
    np.testing.assert_allclose(view_times(0.0, 2.0, 4, 1), [[0.25, 0.75, 1.25, 1.75]])  # = the frozen bin middles
    np.testing.assert_allclose(view_times(0.0, 2.0, 4, 2), [[0.125, 0.625, 1.125, 1.625], [0.375, 0.875, 1.375, 1.875]])
    assert crop_offsets(32, 40, 32, 3) == [(0, 0), (0, 4), (0, 8)]  # along the long side, centred across
    assert crop_offsets(48, 36, 32, 3) == [(0, 2), (8, 2), (16, 2)]
    assert crop_offsets(40, 40, 32, 1) == [(4, 4)]


def test_batches_are_a_function_of_the_step_and_split_over_ranks():
    single = list(zip(range(5), StepBatches(10, 4, seed=1, rank=0, world=1)))
    assert all(len(b) == 4 for _, b in single) and {e for _, b in single for e, _ in b} == {0, 1, 2}  # 2 per epoch
    again = next(iter(StepBatches(10, 4, seed=1, rank=0, world=1, start=3)))
    assert again == single[3][1]
    ranks = [next(iter(StepBatches(10, 2, seed=1, rank=r, world=2, start=1))) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(single[1][1])  # the union of the ranks' micro-batch is single's


def test_mixup_and_cutmix_targets():
    mix = Mixup(mixup=0.8, cutmix=1.0, switch_prob=0.5, smoothing=0.1, num_classes=4)
    labels = torch.tensor([0, 1, 2])
    smooth = mix.targets(labels)
    np.testing.assert_allclose(smooth[0].numpy(), [0.925, 0.025, 0.025, 0.025], rtol=1e-6)
    video = torch.arange(3.0)[:, None, None, None, None].expand(3, 2, 3, 8, 8).contiguous()
    for seed in range(6):
        out, targets, lam = mix(video, labels, np.random.default_rng(seed))
        np.testing.assert_allclose(targets.sum(1).numpy(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(targets.numpy(), (smooth * lam + smooth.flip(0) * (1 - lam)).numpy(), rtol=1e-6)
        # each clip is its own pixels and its mirror's (clip 2 - i), in the proportion lam; mixup blends, cutmix pastes
        np.testing.assert_allclose(out.mean((1, 2, 3, 4)).numpy(), lam * np.arange(3) + (1 - lam) * np.arange(3)[::-1],
                                   rtol=1e-5, atol=1e-6)
    assert Mixup(0.0, 0.0, 0.5, 0.1, 4)(video, labels, np.random.default_rng(0))[2] == 1.0


def test_layer_decay_gives_the_lr_of_each_block(tiny):
    recipe = load_recipe(None, ["finetune.init=x", "finetune.data=y", "optim.lr=1e-3", "optim.weight_decay=0.05",
                                "optim.schedule=cosine", "optim.warmup_steps=0", "train.steps=10"])
    for compat, checkpointing in ((False, False), (True, True)):
        cfg = compose(recipe, config.load(tiny, [f"model.compat={compat}",
                                                 f"model.video.grad_checkpointing={checkpointing}"]))
        model = VideoClassifier(VideoEncoder(cfg), 5, layer_decay=0.5, compat=compat)
        strategy = build_strategy(cfg, model, DistInfo(), cfg.train.steps)  # checkpointing wraps (renames) the blocks
        lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in strategy.optimizer.param_groups for p in g["params"]}
        expect = {"video.cls_token": (1.25e-4, 0.0), "video.pos_embed": (1.25e-4, 0.0), "video.patch_embed": (1.25e-4, 0.05),
                  "video.patch_bias": (1.25e-4, 0.0), "video.temporal_embed": (1e-3 if compat else 1.25e-4, 0.05),
                  "video.blocks.0.attn.qkv.weight": (2.5e-4, 0.05), "video.blocks.0.norm1.weight": (2.5e-4, 0.0),
                  "video.blocks.1.mlp.fc2.weight": (5e-4, 0.05), "video.norm.weight": (1e-3, 0.0),
                  "head.weight": (1e-3, 0.05), "head.bias": (1e-3, 0.0)}
        params = dict(model.video.named_parameters(prefix="video"))
        params.update(model.head.named_parameters(prefix="head"))
        for name, p in model.named_parameters():
            params.setdefault(name.replace("._checkpoint_wrapped_module", ""), p)
        for name, (lr, wd) in expect.items():
            assert lr_of[id(params[name])] == (pytest.approx(lr), wd), name
        assert len(lr_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group
        assert [g["name"] for g in param_groups(model, cfg.optim)][:2] == ["layer00", "layer00_no_decay"]
        for _ in range(4):  # the schedule scales every group alike: the decay survives it
            strategy.scheduler.step()
        lrs = strategy.lrs()
        for layer in range(4):
            assert lrs[f"layer{layer:02d}"] == pytest.approx(lrs["layer03"] * 0.5 ** (3 - layer))


def test_resume_after_a_killed_run_is_bitwise(tiny, downstream, tmp_path):
    extra = ["train.steps=6", "train.ckpt_every=2", "optim.schedule=cosine", "optim.warmup_steps=2", "optim.lr=2e-3",
             "finetune.mixup=0.8", "finetune.cutmix=1.0", "finetune.head_dropout=0.3"]
    whole = tmp_path / "whole"
    Finetuner(load_recipe(RECIPE, _args(tiny, downstream, whole, *extra)), DistInfo()).run()
    killed = tmp_path / "killed"
    env = {**os.environ, "TVTS_FAULT_EXIT_RANK_STEP": "0:6"}  # os._exit(1) before step 6; last checkpoint: step 4
    proc = subprocess.run([sys.executable, LAUNCH, *_args(tiny, downstream, killed, *extra), "finetune.workers=1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not (killed / "finetune.json").exists(), proc.stderr[-2000:]
    assert sorted(p.name for p in (killed / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000004"]
    Finetuner(load_recipe(RECIPE, _args(tiny, downstream, killed, *extra)), DistInfo()).run()  # the same command again
    a, b = _losses(whole), _losses(killed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert [a[s] for s in a] == [b[s] for s in a]  # every loss and the final test: bitwise (workers 0 vs 1 too)
    rerun = Finetuner(load_recipe(RECIPE, _args(tiny, downstream, killed, *extra)), DistInfo()).run()
    assert rerun["metrics"]["top1"] == a[6]["val/top1"]  # a finished run returns its result, trains nothing


def test_two_fsdp_ranks_train_and_test_as_one(tiny, downstream, tmp_path):
    """2 gloo ranks x 2 clips under fsdp = 1 process x 4 clips: the same clips per step (the sampler's split), the
    same mean loss, the same lr per layer group, and the test sharded over the ranks then gathered."""
    extra = ["train.steps=2", "finetune.mixup=0", "finetune.cutmix=0", "optim.warmup_steps=0", "optim.lr=2e-3"]
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    Finetuner(load_recipe(RECIPE, _args(tiny, downstream, single, *extra, "train.micro_batch=4")), DistInfo()).run()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", LAUNCH,
           *_args(tiny, downstream, sharded, *extra, "train.micro_batch=2", "train.strategy=fsdp")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(single), _losses(sharded)
    for step in (1, 2):
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5)
    assert b[2]["val/top1"] == a[2]["val/top1"] and b[2]["val/loss"] == pytest.approx(a[2]["val/loss"], rel=1e-4)
    lrs = [{k: v for k, v in json.loads(line).items() if k.startswith("lr/")}
           for run in (single, sharded) for line in (run / "metrics.jsonl").read_text().splitlines()[:1]]
    assert lrs[0] == pytest.approx(lrs[1]) and len(lrs[0]) == 8  # 4 layers x (decay, no decay)


def test_reads_the_ssv2_and_kinetics_release_annotations(tmp_path):
    ssv2 = tmp_path / "ssv2"
    (ssv2 / "videos").mkdir(parents=True)
    (ssv2 / "something-something-v2-labels.json").write_text(json.dumps({"Pushing something from left to right": "1",
                                                                         "Holding something": "0"}))
    records = [{"id": "12", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right"},
               {"id": "7", "label": "holding a pen", "template": "Holding [something]"}]
    for split in ("train", "validation"):
        (ssv2 / f"something-something-v2-{split}.json").write_text(json.dumps(records))
    recipe = load_recipe(None, ["finetune.init=x", f"finetune.data={ssv2}"])
    lists, fmt = finetune_data.classification_lists(ssv2, recipe.finetune)
    assert fmt == "ssv2_json" and [(it.video, it.label) for it in lists.train] == [("12.webm", 1), ("7.webm", 0)]
    assert lists.classes == ["Holding something", "Pushing something from left to right"]

    k400 = tmp_path / "k400"
    (k400 / "videos" / "abseiling").mkdir(parents=True)
    (k400 / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc,5,15,train\n"
                                    "air drumming,xyz,0,10,train\n")
    (k400 / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nair drumming,qq,30,40,val\n")
    lists, fmt = finetune_data.classification_lists(k400, load_recipe(None, ["finetune.init=x", f"finetune.data={k400}"]).finetune)
    assert fmt == "kinetics_csv" and lists.classes == ["abseiling", "air drumming"]  # sorted training labels
    assert [(it.video, it.label) for it in lists.train] == [("abseiling/abc_000005_000015.mp4", 0), ("xyz_000000_000010.mp4", 1)]
    assert [(it.video, it.label, it.where) for it in lists.eval] == [("qq_000030_000040.mp4", 1, f"{k400 / 'val.csv'}:2")]

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.csv").write_text("video,label\na.mp4,cat\nb.mp4,dog\n")
    (folder / "val.csv").write_text("video,label\nc.mp4,dog\n")
    lists, fmt = finetune_data.classification_lists(folder, load_recipe(None, ["finetune.init=x", f"finetune.data={folder}"]).finetune)
    assert fmt == "csv" and [(it.video, it.label) for it in lists.eval] == [("c.mp4", 1)] and lists.num_classes == 2


@pytest.mark.parametrize("extra, message", [
    (["finetune.labels=nope.json"], "nope.json: no such file"),
    (["finetune.format=xml"], "config error: finetune.format: 'xml' is not one of auto, ssv2"),
    (["finetune.train_list=bad.txt"], 'bad.txt:1: expected "<video> <label>", got 3 fields'),
    (["finetune.init=/no/such/run"], "/no/such/run"),
    (["finetune.frames=12"], "finetune.frames: 12 must be a multiple of the tubelet (2) and at most 8"),
    (["finetune.layer_decy=0.5"], "finetune.layer_decy: unknown key; did you mean finetune.layer_decay?"),
    (["model.video.size=base"], "model: the encoder's model settings come from finetune.init's config.yaml"),
    (["train.stop_at=2"], "train.stop_at: fine-tuning runs to train.steps"),
])
def test_bad_input_is_one_line(extra, message, tiny, downstream, tmp_path, capsys):
    (downstream / "bad.txt").write_text("a.webm 1 extra\n")
    rc = cli(_main, _args(tiny, downstream, tmp_path / "run", *extra))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def _main(argv):
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_finetune", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)
