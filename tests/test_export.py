"""Issue 11: transforms out to ITK/elastix and back in (Registration.load / inverse / init_matrix)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drmime_pl.errors import TransformFileError
from drmime_pl.io.export_itk import Geometry, parse_tfm, physical_matrix, tfm_text
from drmime_pl.io.images import read_image
from drmime_pl.io.result import Registration, write_outputs
from drmime_pl.io.transform_io import load_initial_matrix

from .io_helpers import AFFINE, PERSPECTIVE, REPO, inside_mask, known_registration, pattern, run_warp_cli

sitk = pytest.importorskip("SimpleITK")
TRANSFORMIX = shutil.which("transformix")
FIXED_HW, MOVING_HW = (60, 80), (70, 90)


def _write_run(tmp_path: Path, matrix, moving_path: Path, fixed_path=None) -> Path:
    """write_outputs of a Registration with a known matrix: what a run writes, without optimising."""
    reg = known_registration(matrix, FIXED_HW, MOVING_HW, moving_path, fixed_path or "fixed")
    run = tmp_path / "run"
    write_outputs(reg, torch.rand(1, *FIXED_HW), read_image(moving_path), run, "x: 1\n")
    return run


def _sitk_resample(moving_path, run: Path, fixed_ref) -> np.ndarray:
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat64)
    if (run / "transform.tfm").exists():
        tx = sitk.ReadTransform(str(run / "transform.tfm"))
    else:
        tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(run / "transform_field.mha"), sitk.sitkVectorFloat64))
    return sitk.GetArrayFromImage(sitk.Resample(moving, fixed_ref, tx, sitk.sitkLinear, 0.0))


def _registered_run(tmp_path: Path, moving_path: Path) -> tuple:
    """A real (short) affine registration of a small pair, written to run/."""
    import drmime_pl

    fixed_path = tmp_path / "fixed.png"
    Image.fromarray(np.rint(pattern(*FIXED_HW, phase=0.5)).astype(np.uint8)).save(fixed_path)
    reg = drmime_pl.register(str(fixed_path), str(moving_path), transform="affine", output_dir=str(tmp_path / "run"),
                             overrides=["fit.max_steps=40", "fit.min_steps=0", "data.batch_size=256",
                                        "data.min_level_size=16"])
    return tmp_path / "run", reg.matrix


@pytest.mark.parametrize("matrix", [AFFINE, PERSPECTIVE, None], ids=["affine", "perspective", "registered"])
def test_sitk_and_transformix_match_drmime_warp(tmp_path, matrix):
    moving_path = tmp_path / "moving.png"
    Image.fromarray(np.rint(pattern(*MOVING_HW)).astype(np.uint8)).save(moving_path)
    if matrix is None:
        run, matrix = _registered_run(tmp_path, moving_path)
        assert (run / "transform.tfm").is_file()
    else:
        run = _write_run(tmp_path, matrix, moving_path)
    names = {p.name for p in run.iterdir()}
    assert "TransformParameters.txt" in names and "transform.json" in names
    affine = matrix[2, 0] == 0 and matrix[2, 1] == 0
    assert ("transform.tfm" in names) == affine and ("transform_field.mha" in names) == (not affine)
    assert not any(n.startswith(".") for n in names)  # no temporary left over

    out = tmp_path / "drmime.png"
    r = run_warp_cli("--transform", run / "transform.json", "--moving", moving_path, "--out", out)
    assert r.returncode == 0, r.stderr
    ours = np.asarray(Image.open(out)).astype(np.float64)
    assert ours.shape == FIXED_HW
    inside = inside_mask(matrix, FIXED_HW, MOVING_HW)
    assert inside.mean() > 0.7

    theirs = _sitk_resample(moving_path, run, sitk.Image(FIXED_HW[1], FIXED_HW[0], sitk.sitkFloat64))
    sitk_diff = np.abs(np.rint(theirs) - ours)[inside].max()
    exact = known_registration(matrix, FIXED_HW, MOVING_HW, moving_path).warp(str(moving_path)) * 255.0
    print(f"SimpleITK vs drmime warp: max {sitk_diff} grey levels (8-bit files), "
          f"{np.abs(theirs - exact)[inside].max():.2e} before rounding")
    assert sitk_diff <= 1.0
    if TRANSFORMIX:
        tdir = tmp_path / "tx"
        tdir.mkdir()
        r = subprocess.run([TRANSFORMIX, "-tp", str(run / "TransformParameters.txt"), "-in", str(moving_path),
                            "-out", str(tdir)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:]
        result = np.asarray(Image.open(tdir / "result.png")).astype(np.float64)
        tx_diff = np.abs(result - ours)[inside].max()
        print(f"transformix vs drmime warp: max {tx_diff} grey levels")
        assert result.shape == FIXED_HW and tx_diff <= 1.0


def test_spacing_from_tiff_resolution(tmp_path):
    """TIFFs with resolution tags: the .tfm is physical (mm, as ITK reads TIFF), and SimpleITK reproduces the warp."""
    tifffile = pytest.importorskip("tifffile")
    fixed_path, moving_path = tmp_path / "fixed.tif", tmp_path / "moving.tif"
    tifffile.imwrite(fixed_path, np.rint(pattern(*FIXED_HW, 60000, 1.0)).astype(np.uint16), resolution=(2000.0, 4000.0),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(moving_path, np.rint(pattern(*MOVING_HW, 60000)).astype(np.uint16), resolution=(300.0, 300.0),
                     resolutionunit="INCH")
    run = _write_run(tmp_path, AFFINE, moving_path, fixed_path)
    fixed_geo = Geometry(spacing=(10 / 2000.0, 10 / 4000.0))
    moving_geo = Geometry(spacing=(25.4 / 300.0, 25.4 / 300.0))
    assert sitk.ReadImage(str(fixed_path)).GetSpacing() == pytest.approx(fixed_geo.spacing)
    phys = parse_tfm((run / "transform.tfm").read_text())
    np.testing.assert_allclose(phys, physical_matrix(AFFINE, fixed_geo, moving_geo), rtol=1e-12, atol=1e-15)
    assert "(Spacing 0.005 0.0025)" in (run / "TransformParameters.txt").read_text()
    # SimpleITK resamples the moving TIFF on the fixed TIFF's physical grid with the .tfm: same as warped.tif.
    theirs = _sitk_resample(moving_path, run, sitk.ReadImage(str(fixed_path)))
    warped = tifffile.imread(run / "warped.tif")
    assert warped.dtype == np.uint16 and warped.shape == FIXED_HW
    inside = inside_mask(AFFINE, FIXED_HW, MOVING_HW)
    assert np.abs(np.rint(theirs) - warped.astype(np.float64))[inside].max() <= 1.0
    # and back in: the .tfm with the TIFFs' spacing gives the pixel matrix again
    back = load_initial_matrix(run / "transform.tfm", FIXED_HW, MOVING_HW, fixed_geo, moving_geo)
    np.testing.assert_allclose(back, AFFINE, atol=1e-9)


def test_readme_snippets_run(tmp_path):
    """The README's SimpleITK snippet (and the transformix line when installed) run as written."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use the result in SimpleITK"):]
    python_block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    bash_block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    moving_path = tmp_path / "moving.png"
    Image.fromarray(np.rint(pattern(*MOVING_HW)).astype(np.uint8)).save(moving_path)
    Image.fromarray(np.zeros(FIXED_HW, np.uint8)).save(tmp_path / "fixed.png")
    for matrix in (AFFINE, PERSPECTIVE):
        run = _write_run(tmp_path, matrix, moving_path)
        r = subprocess.run([sys.executable, "-c", python_block], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        ours = known_registration(matrix, FIXED_HW, MOVING_HW, moving_path).warp(str(moving_path)) * 255.0
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "moving_on_fixed.tif")))
        inside = inside_mask(matrix, FIXED_HW, MOVING_HW)
        assert np.abs(theirs - ours)[inside].max() < 0.01
        if TRANSFORMIX:
            r = subprocess.run(["bash", "-c", bash_block], cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
            assert (tmp_path / "transformix_out" / "result.png").is_file()
        shutil.rmtree(run)


def test_load_inverse_round_trip(tmp_path):
    moving_path = tmp_path / "moving.png"
    Image.fromarray(np.rint(pattern(*MOVING_HW)).astype(np.uint8)).save(moving_path)
    run = _write_run(tmp_path, PERSPECTIVE, moving_path)
    reg = Registration.load(run / "transform.json")
    assert reg.fixed_shape == FIXED_HW and reg.moving_shape == MOVING_HW and reg.transform == "perspective"
    np.testing.assert_array_equal(reg.matrix, PERSPECTIVE)
    rng = np.random.default_rng(0)
    fixed_pts = rng.uniform(0, 79, size=(50, 2))
    moving_pts = reg.transform_points(fixed_pts)
    inv = Registration.load(run / "transform.json").inverse()
    assert inv.fixed_shape == MOVING_HW and inv.moving_shape == FIXED_HW and inv.fixed == str(moving_path)
    assert np.abs(inv.transform_points(moving_pts) - fixed_pts).max() < 1e-6
    assert np.abs(reg.transform_points(moving_pts, inverse=True) - fixed_pts).max() < 1e-6
    assert np.abs(inv.inverse().matrix - reg.matrix).max() < 1e-12


def test_load_errors(tmp_path):
    with pytest.raises(TransformFileError, match="not found"):
        Registration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TransformFileError, match="not valid JSON"):
        Registration.load(bad)
    bad.write_text(json.dumps({"matrix": [[1, 0], [0, 1]], "fixed_shape": [4, 4]}))
    with pytest.raises(TransformFileError, match="3 x 3"):
        Registration.load(bad)
    # another method's matrix with only the two required keys loads (evaluate's --transforms layout)
    bad.write_text(json.dumps({"matrix": AFFINE.tolist(), "fixed_shape": [60, 80]}))
    reg = Registration.load(bad)
    assert reg.moving_shape == (60, 80) and reg.transform == "affine"


def test_tfm_parsing_and_initial_matrix(tmp_path):
    np.testing.assert_allclose(parse_tfm(tfm_text(AFFINE)), AFFINE)
    theta, c = 0.3, (5.0, 7.0)
    euler = ("#Insight Transform File V1.0\n#Transform 0\nTransform: Euler2DTransform_double_2_2\n"
             f"Parameters: {theta} 1.5 -2\nFixedParameters: {c[0]} {c[1]}\n")
    m = parse_tfm(euler)
    tx = sitk.Euler2DTransform(c, theta, (1.5, -2.0))
    for p in ((0.0, 0.0), (10.0, 3.0)):
        np.testing.assert_allclose(m[:2, :2] @ p + m[:2, 2], tx.TransformPoint(p), atol=1e-12)
    with pytest.raises(ValueError, match="unsupported"):
        parse_tfm("Transform: BSplineTransform_double_2_2\nParameters: 1 2 3\nFixedParameters: 0\n")
    # a transform.json of half-size images is scaled edge to edge
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"matrix": np.eye(3).tolist(), "fixed_shape": [30, 40], "moving_shape": [30, 40]}))
    np.testing.assert_allclose(load_initial_matrix(small, (60, 80), (60, 80)), np.eye(3), atol=1e-12)
    shift = np.array([[1, 0, 2.0], [0, 1, -1.0], [0, 0, 1]])
    small.write_text(json.dumps({"matrix": shift.tolist(), "fixed_shape": [30, 40], "moving_shape": [30, 40]}))
    np.testing.assert_allclose(load_initial_matrix(small, (60, 80), (60, 80))[:2, 2], [4.0, -2.0], atol=1e-12)
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(TransformFileError, match="init_matrix"):
        load_initial_matrix(tmp_path / "x.yaml", (4, 4), (4, 4))


def test_init_matrix_starts_from_the_saved_transform(tmp_path):
    """prepare_pair with init_matrix: the initial coefficients reproduce the saved matrix, and no search runs."""
    from drmime_pl.config import load_config
    from drmime_pl.core.geometry import generator_basis, matrix_from_coefficients, pixel_matrix_from_normalised
    from drmime_pl.training.prepare import prepare_pair

    fixed_path, moving_path = tmp_path / "f.png", tmp_path / "m.png"
    Image.fromarray(np.rint(pattern(*FIXED_HW, phase=1.0)).astype(np.uint8)).save(fixed_path)
    Image.fromarray(np.rint(pattern(*MOVING_HW)).astype(np.uint8)).save(moving_path)
    saved = tmp_path / "transform.json"
    saved.write_text(json.dumps({"matrix": PERSPECTIVE.tolist(), "fixed_shape": list(FIXED_HW),
                                 "moving_shape": list(MOVING_HW)}))
    cfg = load_config(None, [f"model.init_matrix={saved}", "data.min_level_size=16"])
    assert cfg.model.init_matrix == str(saved)
    pair = prepare_pair(str(fixed_path), str(moving_path), cfg.data, init="search", model="perspective",
                        init_matrix=cfg.model.init_matrix)
    m = matrix_from_coefficients(pair.init.double(), generator_basis("perspective").double())
    pix = pixel_matrix_from_normalised(m, FIXED_HW, MOVING_HW, pair.scale).numpy()
    np.testing.assert_allclose(pix, PERSPECTIVE, atol=1e-4)
