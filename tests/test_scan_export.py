"""A NIfTI mask goes back into the input's own geometry: same affine, same voxel order, for inputs
stored in any orientation."""

import nibabel as nib
import numpy as np
import pytest

from tumorlens.medical_io import read_scan
from tumorlens.scan_export import write_nifti_mask


def _volume(shape=(40, 48, 20)) -> np.ndarray:
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 10, shape).astype(np.float32)
    vol[10:20, 5:30, 3:9] += 400  # an asymmetric bright block: a wrong axis flip or swap shows
    return vol


@pytest.mark.parametrize("affine", [
    np.diag([0.9, 0.8, 3.0, 1.0]),                                             # RAS
    np.array([[-0.9, 0, 0, 10], [0, -0.8, 0, 5], [0, 0, 3.0, -2], [0, 0, 0, 1]]),  # LPS, as DICOM-born files are
    np.array([[0, 0, 3.0, 0], [0.9, 0, 0, 0], [0, -0.8, 0, 0], [0, 0, 0, 1]]),     # axes permuted
])
def test_the_mask_lands_on_the_input_voxels_with_its_affine(tmp_path, affine):
    vol = _volume()
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    scan = read_scan(path)
    # a "segmentation" that marks the bright block in each displayed slice
    masks = [scan.rgb(i)[..., 0] > 200 for i in range(scan.n_slices)]
    out = write_nifti_mask(scan, masks, tmp_path / "scan_mask.nii.gz")
    saved = nib.load(str(out))
    assert np.allclose(saved.affine, nib.load(str(path)).affine)
    data = np.asarray(saved.dataobj)
    assert data.shape == vol.shape and data.dtype == np.uint8
    assert np.array_equal(data.astype(bool), vol > 300)  # exactly the block, in the input's voxel order
