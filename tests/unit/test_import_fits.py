"""import-fits: FITS images (2-D maps, 3-D cubes, LensTools ConvergenceMap files) into a dataset."""

import numpy as np
import pytest
from astropy.io import fits

from conftest import assert_one_line_error, run_main
from pipeline.data.fits import read_fits_maps
from pipeline.data.loader import MapDataset
from pipeline.data.verify import verify_dataset


def write(path, data=None, angle=None, hdus=()):
    """A FITS file: a primary HDU holding ``data`` (None: no data) and ANGLE (degrees), then ``hdus``."""
    primary = fits.PrimaryHDU(data)
    if angle is not None:
        primary.header["ANGLE"] = angle
    fits.HDUList([primary, *hdus]).writeto(path)
    return path


def maps(n, h=8, w=6, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=(n, h, w)).astype(dtype)


def read_all(ds):
    m = verify_dataset(ds)
    return m, MapDataset(ds).read(np.arange(m.n_maps))[0]


def assert_refused(tmp_path, *args, fragments=()):
    """Exit status 1, one line naming what is wrong, and nothing left but the inputs."""
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_main("import-fits", *args, "--out", tmp_path / "ds", "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert_one_line_error(proc, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cube_round_trip(tmp_path):
    cube = maps(7)  # non-square maps are allowed, as import-npy allows them
    write(tmp_path / "cube.fits", cube, angle=3.5)
    proc = run_main("import-fits", tmp_path / "cube.fits", "--out", tmp_path / "ds", "--shard-size", 3, "--quiet",
                    check=True)
    assert "7 maps 8x6, 3 shards" in proc.stdout
    m, got = read_all(tmp_path / "ds")
    assert (m.n_maps, m.map_shape, m.side_angle_deg) == (7, (8, 6), 3.5)
    np.testing.assert_array_equal(got, cube)
    assert [s["path"] for s in m.provenance["source"]] == [str((tmp_path / "cube.fits").resolve())]
    assert m.provenance["source_key"] == "HDU 0"


def test_several_2d_files_concatenate_in_order(tmp_path):
    parts = maps(3, seed=1, dtype=np.float64)  # big-endian float64 in the files, float32 stored
    files = [write(tmp_path / f"m{i}.fits", parts[i], angle=2.0) for i in (2, 0, 1)]
    run_main("import-fits", *files, "--out", tmp_path / "ds", "--shard-size", 2, "--quiet", check=True)
    m, got = read_all(tmp_path / "ds")
    assert (m.n_maps, m.side_angle_deg) == (3, 2.0)
    np.testing.assert_array_equal(got, parts[[2, 0, 1]].astype(np.float32))
    assert [s["path"] for s in m.provenance["source"]] == [str(f.resolve()) for f in files]


def test_cube_and_maps_mixed_with_params(tmp_path):
    cube, single = maps(4, seed=2), maps(1, seed=3)
    write(tmp_path / "a.fits", cube, angle=3.5)
    write(tmp_path / "b.fits", single[0], angle=3.5 * (1 + 1e-12))  # within 1e-9 relative: the same field
    params = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.save(tmp_path / "p.npy", params)
    run_main("import-fits", tmp_path / "a.fits", tmp_path / "b.fits", "--out", tmp_path / "ds", "--params",
             tmp_path / "p.npy", "--param-names", "Omega_m,sigma_8", "--side-angle-deg", 3.5, "--quiet", check=True)
    m = verify_dataset(tmp_path / "ds")
    got, got_params = MapDataset(tmp_path / "ds").read(np.arange(5))
    np.testing.assert_array_equal(got, np.concatenate([cube, single]))
    np.testing.assert_array_equal(got_params, params)
    assert m.param_names == ["Omega_m", "sigma_8"]


def test_lenstools_convergence_map(tmp_path):
    """As LensTools' ConvergenceMap.save writes it: the image in the primary HDU (float32
    unless double precision), the side angle in degrees as ANGLE, cosmology keywords."""
    kappa = maps(1, 16, 16, seed=4)[0]
    hdu = fits.PrimaryHDU(kappa.astype(np.float32))
    hdu.header["H0"] = (70.0, "Hubble constant in km/s*Mpc")
    hdu.header["h"] = (0.7, "Dimensionless Hubble constant")
    hdu.header["OMEGA_M"] = (0.3, "Dark Matter density")
    hdu.header["OMEGA_L"] = (0.7, "Dark Energy density")
    hdu.header["W0"] = (-1.0, "Dark Energy equation of state")
    hdu.header["WA"] = (0.0, "Dark Energy running equation of state")
    hdu.header["Z"] = (2.0, "Redshift of the background sources")
    hdu.header["ANGLE"] = (3.5, "Side angle in degrees")
    hdu.header["ITYPE"] = ("ConvergenceMap", "Image type")
    fits.HDUList([hdu]).writeto(tmp_path / "conv.fits")

    fm = read_fits_maps(tmp_path / "conv.fits")
    assert (fm.maps.shape, fm.side_angle_deg, fm.hdu) == ((1, 16, 16), 3.5, 0)
    block = fm.maps[0:1]
    assert block.dtype == np.float32 and block.dtype.isnative
    np.testing.assert_array_equal(np.asarray(fm.maps)[0], kappa)

    run_main("import-fits", tmp_path / "conv.fits", "--out", tmp_path / "ds", "--quiet", check=True)
    m, got = read_all(tmp_path / "ds")
    assert (m.n_maps, m.map_shape, m.side_angle_deg) == (1, (16, 16), 3.5)
    np.testing.assert_array_equal(got[0], kappa)


@pytest.mark.parametrize("hdu", [None, "1", "KAPPA", "kappa"])
def test_image_in_an_extension(tmp_path, hdu):
    """An empty primary HDU carrying ANGLE, the cube in an ImageHDU after a table."""
    cube = maps(3, seed=5)
    table = fits.BinTableHDU.from_columns([fits.Column(name="z", format="E", array=np.ones(3))], name="META")
    write(tmp_path / "ext.fits", None, angle=1.75, hdus=[fits.ImageHDU(cube, name="KAPPA"), table])
    fm = read_fits_maps(tmp_path / "ext.fits", None if hdu is None else int(hdu) if hdu.isdigit() else hdu)
    assert (fm.hdu, fm.side_angle_deg) == (1, 1.75)
    run_main("import-fits", tmp_path / "ext.fits", "--out", tmp_path / "ds", "--quiet",
             *(["--hdu", hdu] if hdu else []), check=True)
    m, got = read_all(tmp_path / "ds")
    assert (m.n_maps, m.side_angle_deg, m.provenance["source_key"]) == (3, 1.75, "HDU 1")
    np.testing.assert_array_equal(got, cube)


def test_extension_angle_wins_over_primary(tmp_path):
    image = fits.ImageHDU(maps(2))
    image.header["ANGLE"] = 5.0
    write(tmp_path / "ext.fits", None, angle=1.0, hdus=[image])
    assert read_fits_maps(tmp_path / "ext.fits").side_angle_deg == 5.0


def test_compressed_and_scaled_images(tmp_path):
    cube = maps(3, seed=6)
    comp = fits.CompImageHDU(cube, compression_type="GZIP_1", quantize_level=0.0)  # lossless
    write(tmp_path / "comp.fits", None, angle=2.0, hdus=[comp])
    ints = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4) * 0.5 - 3
    scaled = fits.PrimaryHDU(ints.copy())  # scale() rewrites the array it holds
    scaled.scale("int16", bscale=0.5, bzero=-3)
    scaled.header["ANGLE"] = 2.0
    scaled.writeto(tmp_path / "scaled.fits")
    np.testing.assert_array_equal(read_fits_maps(tmp_path / "comp.fits").maps[:], cube)
    np.testing.assert_array_equal(read_fits_maps(tmp_path / "scaled.fits").maps[0:2], ints.astype(np.float32))


def test_reads_index_like_an_array(tmp_path):
    from pipeline.data.fits import stack_fits_maps

    cube, single = maps(5, seed=7), maps(1, seed=8)
    items = [read_fits_maps(write(tmp_path / "a.fits", cube, angle=1.0)),
             read_fits_maps(write(tmp_path / "b.fits", single[0], angle=1.0))]
    stacked, side = stack_fits_maps(items)
    want = np.concatenate([cube, single])
    assert (stacked.shape, side) == ((6, 8, 6), 1.0)
    for key in (0, -1, 4, slice(None), slice(3, 6), slice(4, 100), slice(2, 2), slice(None, None, -2)):
        np.testing.assert_array_equal(stacked[key], want[key])
    np.testing.assert_array_equal(items[0].maps[1:3], cube[1:3])
    with pytest.raises(IndexError):
        stacked[6]


def test_import_reads_blocks(tmp_path, monkeypatch):
    """The importer asks for blocks of maps, never the whole cube."""
    from pipeline.data import fits as fits_module

    write(tmp_path / "big.fits", np.zeros((150, 4, 4), np.float32), angle=1.0)
    requested = []
    read = fits_module.FitsCube._read

    def spy(self, start, stop):
        requested.append(stop - start)
        return read(self, start, stop)

    monkeypatch.setattr(fits_module.FitsCube, "_read", spy)
    run_main("import-fits", tmp_path / "big.fits", "--out", tmp_path / "ds", "--quiet", check=True)
    assert sum(requested) == 150 and max(requested) <= 64


# --- bad inputs: exit status 1, one line naming the file, nothing written -----------------

def test_not_fits(tmp_path):
    (tmp_path / "junk.fits").write_text("not a FITS file\n" * 300)
    (tmp_path / "empty.fits").write_bytes(b"")
    assert_refused(tmp_path, tmp_path / "junk.fits", fragments=("junk.fits", "not a readable FITS file"))
    assert_refused(tmp_path, tmp_path / "empty.fits", fragments=("empty.fits", "not a readable FITS file"))
    assert_refused(tmp_path, tmp_path / "missing.fits", fragments=("missing.fits", "no such file"))


def test_truncated(tmp_path):
    write(tmp_path / "full.fits", maps(10), angle=1.0)
    (tmp_path / "cut.fits").write_bytes((tmp_path / "full.fits").read_bytes()[:2880 + 500])
    (tmp_path / "full.fits").unlink()
    assert_refused(tmp_path, tmp_path / "cut.fits", fragments=("cut.fits", "HDU 0", "truncated"))


def test_no_image_hdu(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    write(tmp_path / "t.fits", None, angle=1.0, hdus=[table])
    assert_refused(tmp_path, tmp_path / "t.fits", fragments=("t.fits", "no HDU holds image data"))
    assert_refused(tmp_path, tmp_path / "t.fits", "--hdu", "1", fragments=("t.fits", "HDU 1", "not an image"))
    assert_refused(tmp_path, tmp_path / "t.fits", "--hdu", "0", fragments=("t.fits", "HDU 0", "no image data"))


def test_missing_hdu(tmp_path):
    write(tmp_path / "m.fits", maps(2), angle=1.0)
    assert_refused(tmp_path, tmp_path / "m.fits", "--hdu", "3", fragments=("m.fits", "no HDU 3", "has 1"))
    assert_refused(tmp_path, tmp_path / "m.fits", "--hdu", "KAPPA", fragments=("m.fits", "EXTNAME 'KAPPA'"))


@pytest.mark.parametrize("shape", [(8,), (2, 3, 8, 8)])
def test_wrong_dimensions(tmp_path, shape):
    write(tmp_path / "d.fits", np.zeros(shape, np.float32), angle=1.0)
    assert_refused(tmp_path, tmp_path / "d.fits", fragments=("d.fits", "HDU 0", f"{len(shape)} dimensions"))


@pytest.mark.parametrize("angle", [0.0, -3.5, "3.5", True])
def test_bad_angle(tmp_path, angle):
    write(tmp_path / "a.fits", maps(2), angle=angle)
    assert_refused(tmp_path, tmp_path / "a.fits", fragments=("a.fits", "HDU 0", "ANGLE", "positive number"))


def test_bad_angle_in_primary_of_an_extension_image(tmp_path):
    write(tmp_path / "a.fits", None, angle=-1.0, hdus=[fits.ImageHDU(maps(2))])
    assert_refused(tmp_path, tmp_path / "a.fits", fragments=("a.fits", "HDU 0", "ANGLE"))


def test_no_side_angle(tmp_path):
    write(tmp_path / "a.fits", maps(2), angle=2.0)
    write(tmp_path / "b.fits", maps(2))
    assert_refused(tmp_path, tmp_path / "a.fits", tmp_path / "b.fits",
                   fragments=("b.fits", "no ANGLE", "--side-angle-deg"))
    run_main("import-fits", tmp_path / "b.fits", "--side-angle-deg", 2.0, "--out", tmp_path / "ok", "--quiet",
             check=True)
    assert verify_dataset(tmp_path / "ok").side_angle_deg == 2.0


def test_side_angle_disagrees_with_header(tmp_path):
    write(tmp_path / "a.fits", maps(2), angle=3.5)
    assert_refused(tmp_path, tmp_path / "a.fits", "--side-angle-deg", 3.5 * (1 + 1e-6),
                   fragments=("--side-angle-deg", "a.fits", "ANGLE"))


def test_files_disagree(tmp_path):
    write(tmp_path / "a.fits", maps(2), angle=3.5)
    write(tmp_path / "b.fits", maps(2), angle=5.0)
    write(tmp_path / "c.fits", maps(2, 8, 8), angle=3.5)
    assert_refused(tmp_path, tmp_path / "a.fits", tmp_path / "b.fits", fragments=("b.fits", "ANGLE", "a.fits"))
    assert_refused(tmp_path, tmp_path / "a.fits", tmp_path / "c.fits", fragments=("c.fits", "8x8", "8x6"))


def test_nonfinite_map_named(tmp_path):
    write(tmp_path / "a.fits", maps(3), angle=1.0)
    bad = maps(100)
    bad[70, 2, 3] = np.inf
    write(tmp_path / "b.fits", bad, angle=1.0)
    # the map is found in the second shard: the complete first one is removed too
    assert_refused(tmp_path, tmp_path / "a.fits", tmp_path / "b.fits", "--shard-size", 50,
                   fragments=("b.fits", "HDU 0", "map 70", "NaN or Inf"))
    nan = maps(1)[0]
    nan[0, 0] = np.nan
    write(tmp_path / "n.fits", nan, angle=1.0)
    assert_refused(tmp_path, tmp_path / "n.fits", fragments=("n.fits", "map 0", "NaN"))
