"""Augmentation: short side -> resize_short, one crop shared by every frame, ImageNet/CLIP normalisation; the split
into a uint8 crop (what loader workers ship) and the normalisation on the device gives the float path's bits."""
import pytest
import torch
import torch.nn.functional as F

from tvts.data.augment import (NORMALIZE_STATS, augment_video, center_offset, crop_offsets, crop_video,
                               normalize_video, resize_short_side, resized_size)


def random_video(t=4, h=48, w=80, seed=0):
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def manual(video, image_size, resize_short, top, left, normalize="imagenet"):
    """Resize, crop, scale and normalise written out step by step."""
    size = resized_size(video.shape[2], video.shape[3], resize_short)
    resized = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    crop = resized[:, :, top:top + image_size, left:left + image_size].double() / 255
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in NORMALIZE_STATS[normalize])
    return ((crop - mean) / std).float()


def test_resized_size_truncates_the_long_side_like_the_official_code():
    assert resized_size(240, 320, 268) == (268, 357)  # 357.33
    assert resized_size(720, 1280, 268) == (268, 476)  # 476.44
    assert resized_size(320, 240, 268) == (357, 268)
    assert resized_size(100, 100, 268) == (268, 268)


def test_shape_dtype_layout():
    out = augment_video(random_video(), 32, 40, train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    # a channels-last view (what decode_frames returns) works the same
    video = random_video()
    channels_last = video.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert torch.equal(augment_video(channels_last, 32, 40), augment_video(video, 32, 40))


def test_train_crop_is_shared_by_all_frames_and_matches_a_manual_crop():
    video = random_video(t=5)
    out = augment_video(video, 32, 40, train=True, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    height, width = resized_size(48, 80, 40)  # (40, 66)
    top = int(torch.randint(0, height - 32 + 1, (1,), generator=g))
    left = int(torch.randint(0, width - 32 + 1, (1,), generator=g))
    assert torch.allclose(out, manual(video, 32, 40, top, left), atol=1e-5)
    # identical frames stay identical: one crop for the whole clip
    still = video[:1].expand(5, -1, -1, -1)
    out = augment_video(still, 32, 40, train=True, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(out[0], frame) for frame in out[1:])


def test_train_crops_vary_with_the_generator():
    video = random_video()
    outs = {augment_video(video, 32, 40, train=True, generator=torch.Generator().manual_seed(s)).sum().item() for s in range(6)}
    assert len(outs) > 1


def test_eval_centre_crop_is_deterministic():
    video = random_video()
    a, b = augment_video(video, 32, 40), augment_video(video, 32, 40, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    top, left = center_offset(40, 32), center_offset(66, 32)
    assert (top, left) == (4, 17)
    assert torch.allclose(a, manual(video, 32, 40, top, left), atol=1e-5)


def test_no_resize_when_the_short_side_already_matches():
    video = random_video(h=40, w=56)
    out = augment_video(video, 32, 40, normalize="clip")
    assert torch.allclose(out, manual(video, 32, 40, 4, 12, "clip"), atol=1e-5)


@pytest.mark.parametrize("normalize", ["imagenet", "clip"])
def test_normalisation_values(normalize):
    colour = torch.tensor([10, 128, 250], dtype=torch.uint8)
    video = colour.view(1, 3, 1, 1).expand(2, 3, 50, 60).contiguous()
    out = augment_video(video, 32, 40, normalize=normalize)
    mean, std = NORMALIZE_STATS[normalize]
    for c in range(3):
        expected = (colour[c].item() / 255 - mean[c]) / std[c]
        assert torch.allclose(out[:, c], torch.full_like(out[:, c], expected), atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        augment_video(random_video().float(), 32, 40)
    with pytest.raises(ValueError, match="smaller than the crop"):
        augment_video(random_video(), 32, 24)
    with pytest.raises(ValueError, match="normalize"):
        augment_video(random_video(), 32, 40, normalize="laion")


def float_path(video, image_size, resize_short, normalize="imagenet", train=False, generator=None):
    """What loader workers shipped before uint8 clips, kept verbatim as the reference: resize on uint8, crop
    view, then float32 and the fused scale and shift, in the worker."""
    video = resize_short_side(video, resize_short)
    top, left = crop_offsets(video.shape[2], video.shape[3], image_size, train, generator)
    crop = video[:, :, top:top + image_size, left:left + image_size]
    mean, std = NORMALIZE_STATS[normalize]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=video.device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=video.device).view(1, 3, 1, 1)
    out = crop.to(torch.float32, memory_format=torch.contiguous_format)
    return out.mul_(scale).sub_(shift)


@pytest.mark.parametrize("normalize", ["imagenet", "clip"])
@pytest.mark.parametrize("train", [False, True])
def test_uint8_crop_then_normalise_is_bitwise_the_float_path(normalize, train):
    """Everything before the normalisation is integer-exact (uint8 resize, crop), so shipping the uint8 crop
    and normalising the stacked batch later (on the device) gives the old worker output bit for bit."""
    videos = [random_video(seed=1), random_video(t=4, h=40, w=56, seed=2),  # resized / short side already right
              random_video(seed=3).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),  # channels-last, as decoded
              random_video(t=4, h=90, w=60, seed=4)]  # portrait
    old, crops = [], []
    for k, video in enumerate(videos):
        old.append(float_path(video, 32, 40, normalize, train, torch.Generator().manual_seed(k)))
        crop = crop_video(video, 32, 40, train, torch.Generator().manual_seed(k))
        assert crop.dtype == torch.uint8 and crop.shape == (4, 3, 32, 32)
        crops.append(crop)
        clip = normalize_video(crop, normalize)  # one clip (fine-tuning views, eval features)
        assert clip.dtype == torch.float32 and clip.is_contiguous() and torch.equal(clip, old[-1])
        assert torch.equal(augment_video(video, 32, 40, normalize, train, torch.Generator().manual_seed(k)), old[-1])
    batch = normalize_video(torch.stack(crops), normalize)  # a collated (B, T, 3, S, S) batch, as the strategies do
    assert batch.dtype == torch.float32 and batch.is_contiguous() and torch.equal(batch, torch.stack(old))
    assert torch.stack(crops).nbytes * 4 == batch.nbytes  # what the workers ship: a quarter of the bytes


def test_normalize_video_bad_input():
    with pytest.raises(ValueError, match="uint8 pixels"):
        normalize_video(random_video().float())
    with pytest.raises(ValueError, match="uint8 pixels"):
        normalize_video(random_video()[:, :2])
    with pytest.raises(ValueError, match="normalize"):
        normalize_video(random_video(), "laion")
    with pytest.raises(ValueError, match="crop_video expects"):
        crop_video(random_video().float(), 32, 40)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_normalising_on_the_gpu_gives_the_cpu_bits():
    crops = torch.stack([crop_video(random_video(seed=s), 32, 40) for s in range(3)])
    on_gpu = normalize_video(crops.pin_memory().to("cuda", non_blocking=True))
    assert torch.equal(on_gpu.cpu(), normalize_video(crops))
