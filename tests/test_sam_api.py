"""The SAM tabs' named endpoints through gradio_client against the running dashboard (app_url)."""
import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from pipeline.augment import jittered_box_for
from pipeline.metrics import dice
from pipeline.phantom import make_phantom


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def test_sam_endpoints_are_named(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/segment", "/finetune_sam"} <= set(names)


def test_segment_endpoint(client, tmp_path):
    ph = make_phantom(11)
    path = tmp_path / "head.png"
    cv2.imwrite(str(path), ph.image)
    box = jittered_box_for(ph.mask, np.random.default_rng(0))
    mask_path, info = client.predict(handle_file(str(path)), *box, ph.pixel_size_mm, "base model", False,
                                     api_name="/segment")
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE) > 127
    assert mask.shape == ph.mask.shape and dice(mask, ph.mask) > 0.8
    assert info["box"] == [float(v) for v in box] and info["hc_mm"] > 0 and info["ga_weeks"] > 0
    with pytest.raises(AppError, match="outside"):
        client.predict(handle_file(str(path)), 5000, 5000, 6000, 6000, None, "base model", False,
                       api_name="/segment")
    with pytest.raises(AppError, match="no fine-tuned run named 'no-such-run'"):
        client.predict(handle_file(str(path)), *box, None, "no-such-run", False, api_name="/segment")
