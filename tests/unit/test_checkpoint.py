"""Checkpoint files: the typed header, format versions, and the trainer's state registry."""

import pytest
import torch

from conftest import assert_same_state
from pipeline.errors import DataError
from pipeline.train.checkpoint import FORMAT_VERSION, read_checkpoint
from pipeline.train.state import Progress, TrainState


def as_version_1(d: dict) -> dict:
    """The layout checkpoints had before version 2: parts beside the header, the fidelity record
    under "fidelity", no conditioning."""
    parts = dict(d["parts"])
    progress = parts.pop("progress")
    return {"format": d["format"], "format_version": 1, "step": d["step"], "config": d["config"],
            "model_args": d["model_args"], "transform": d["transform"], "data": d["data"],
            "fidelity": {"best_score": progress["best_score"], "best_step": progress["best_step"]}, **parts}


def test_version_1_checkpoints_still_load(trained_tiny, tmp_path):
    path = trained_tiny / "checkpoints" / "step-00000008.pt"
    d = torch.load(path, weights_only=True)
    assert d["format_version"] == FORMAT_VERSION == 2
    torch.save(as_version_1(d), tmp_path / "v1.pt")
    old, new = read_checkpoint(tmp_path / "v1.pt"), read_checkpoint(path)
    assert not old.support.conditional
    assert (old.step, old.model_args, old.transform, old.side_angle_deg, old.train_manifest_digest) == \
           (new.step, new.model_args, new.transform, new.side_angle_deg, new.train_manifest_digest)
    assert_same_state(old.parts, new.parts)


def test_a_run_resumes_from_a_version_1_checkpoint(trained_tiny, tiny_data, tmp_path):
    from conftest import CONFIGS, last_checkpoint, run_main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    d = torch.load(trained_tiny / "checkpoints" / "step-00000008.pt", weights_only=True)
    torch.save(as_version_1(d), run / "checkpoints" / "step-00000008.pt")
    proc = run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
                    "--set", "train.steps=10", check=True)
    assert "resuming from" in proc.stdout and last_checkpoint(run).step == 10


@pytest.mark.parametrize("change, message", [({"format_version": 3}, "format_version 3 is not readable"),
                                             ({"format": "other"}, "not a cosmogan checkpoint"),
                                             ({"model_args": {"image_size": 30}}, "model.image_size")])
def test_foreign_or_future_checkpoints_are_refused(trained_tiny, tmp_path, change, message):
    d = torch.load(trained_tiny / "checkpoints" / "best.pt", weights_only=True)
    torch.save({**d, **change}, tmp_path / "x.pt")
    with pytest.raises(DataError, match=message):
        read_checkpoint(tmp_path / "x.pt")


def test_state_registry_restores_in_order_and_names_what_is_missing():
    order = []

    class Part:
        def __init__(self, name):
            self.name, self.value = name, 0

        def state_dict(self):
            return {"value": self.value}

        def load_state_dict(self, d):
            order.append(self.name)
            self.value = d["value"]

    state = TrainState()
    a, b, extra = Part("a"), Part("b"), Part("extra")
    state.register("b", b)
    state.register("a", a)
    state.register("extra", extra, optional=True)
    with pytest.raises(ValueError, match="registered twice"):
        state.register("a", a)
    assert state.load_state_dict({"a": {"value": 1}, "b": {"value": 2}}, "ck.pt") == ["extra"]
    assert order == ["b", "a"] and (a.value, b.value) == (1, 2)
    with pytest.raises(DataError, match="ck.pt: checkpoint lacks the state of 'b'"):
        state.load_state_dict({"a": {"value": 1}}, "ck.pt")
    p = Progress(step=7, best_score=0.5, best_step=4)
    q = Progress()
    q.load_state_dict(p.state_dict())
    assert q == p
