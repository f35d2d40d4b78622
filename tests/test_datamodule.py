"""The pixel sampler: deterministic per step, respects weights, level-invariant coordinates."""
import torch

from drmime_pl.core.pyramid import sampling_weights
from drmime_pl.training.datamodule import PixelBatchSampler
from drmime_pl.core.geometry import frame_matrix, transform_points
from drmime_pl.core.pyramid import gaussian_pyramid


def make_sampler(weights=None, seed=0, levels=3):
    img = torch.rand(2, 64, 96)
    pyr = gaussian_pyramid(img, levels)
    if weights is None:
        weights = [torch.ones(p.shape[-2:]) for p in pyr]
    return PixelBatchSampler(pyr, weights, (64, 96), 48.0, 256, seed), pyr


def test_batch_depends_only_on_seed_and_step():
    s, _ = make_sampler()
    a, b = s.batch(7), s.batch(7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(s.batch(8)["fixed"], a["fixed"])
    other, _ = make_sampler(seed=1)
    assert not torch.equal(other.batch(7)["fixed"], a["fixed"])
    assert a["fixed_norm"].shape == (3, 256, 2) and a["fixed"].shape == (3, 256, 2) and a["permutation"].shape == (3, 256)


def test_zero_weight_pixels_are_never_sampled_and_values_match_coordinates():
    img = torch.rand(1, 64, 96)
    pyr = gaussian_pyramid(img, 2)
    mask0 = torch.zeros(64, 96)
    mask0[:, 48:] = 1.0  # right half only
    graded = torch.rand(32, 48) * (torch.arange(48) >= 24)  # graded weights: CDF path
    s = PixelBatchSampler(pyr, [mask0, graded], (64, 96), 48.0, 512, 0)
    batch = s.batch(0)
    # normalised -> grid -> level pixel, then check the sampled value is the pixel's value
    grid_trans_norm_ = frame_matrix((64, 96), "norm", "grid", 48.0)
    for level, img_l in enumerate(pyr):
        h, w = img_l.shape[-2:]
        grid = transform_points(grid_trans_norm_.float(), batch["fixed_norm"][level])
        x = ((grid[:, 0] + 1) * w - 1) / 2
        y = ((grid[:, 1] + 1) * h - 1) / 2
        assert torch.allclose(x, x.round(), atol=1e-4) and torch.allclose(y, y.round(), atol=1e-4)
        assert bool((x.round() >= w // 2).all()), "sampled a zero-weight pixel"
        values = img_l[0, y.round().long(), x.round().long()]
        assert torch.allclose(values, batch["fixed"][level, :, 0])


def test_edge_weights_favour_structure():
    img = torch.zeros(1, 64, 64)
    img[:, :, 32:] = 1.0  # one vertical edge
    w = sampling_weights(img, torch.ones(64, 64, dtype=torch.bool), "edges")
    assert float(w[:, 30:34].mean()) > 5 * float(w[:, :20].mean()) > 0
    assert torch.equal(sampling_weights(img, torch.ones(64, 64, dtype=torch.bool), "uniform"), torch.ones(64, 64))
