"""The GPU data-sheet peak behind the MFU figure is looked up by the device's own name."""

from __future__ import annotations

import pytest

from meditron.train.metrics import data_sheet_key


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "H100"),          # SXM, what torch.cuda.get_device_name reports
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA GH200 480GB", "GH200"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA L40", "L40"),                      # not the L4's 121 TFLOP/s
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA A10G", None),                      # not the A10's: measured instead
    ("NVIDIA H800", None),
])
def test_data_sheet_key_matches_whole_names_longest_first(name, key):
    assert data_sheet_key(name) == key
