"""The sharded layout's execution path on the CPU: accelerate's hooks on every part of the device map (as
`dispatch_model` installs them across GPUs), several micro-batches in flight, forced and generate modes."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch
from accelerate import dispatch_model

from vesselseg.infer import SyntheticImages, Task
from vesselseg.infer.pipelined import serve
from vesselseg.infer.predictor import NativePredictor
from vesselseg.infer.sharded import balanced_device_map
from vesselseg.model import build_preset, prompts

PROMPT = prompts.segmentation_prompt("blood vessels")


def _serve(predictor, tasks: list[Task], in_flight: int) -> dict[str, tuple[np.ndarray, int, str]]:
    work, results = queue.Queue(), queue.Queue()
    for task in tasks + [None] * in_flight:
        work.put(task)
    serve(0, lambda: predictor, SyntheticImages(90, 100), work.get, results.put, in_flight, devices=[])
    maps = {}
    while not results.empty():
        kind, _, payload = results.get()
        assert kind in ("ready", "result", "done"), payload
        if kind == "result":
            maps.update({r.sample_id: (r.prob.levels, r.n_seg, r.text) for r in payload})
    return maps


@pytest.mark.parametrize("mode", ["forced", "generate"])
def test_hooked_layout_with_micro_batches_in_flight_matches_the_plain_model(mode) -> None:
    torch.manual_seed(0)
    model, processor = build_preset("tiny")
    model.eval()
    tasks = [Task(i, (f"a{i}", f"b{i}")) for i in range(3)]
    plain = _serve(NativePredictor(model, processor, PROMPT, mode, 6), tasks, in_flight=1)

    # The map a 2-GPU copy gets, every entry on the CPU, with hooks forced on as they are between GPUs.
    device_map = {name: "cpu" for name in balanced_device_map(model, [0, 1], [1, 1])}
    hooked = dispatch_model(model, device_map, main_device="cpu", force_hooks=True,
                            skip_keys=sorted(model._skip_keys_device_placement))  # fmt: skip
    assert hasattr(hooked.language_model.model.layers[1], "_hf_hook")
    in_flight = _serve(NativePredictor(hooked, processor, PROMPT, mode, 6), tasks, in_flight=3)

    assert sorted(in_flight) == sorted(plain) and len(plain) == 6
    for sample_id, (prob, n_seg, text) in plain.items():
        np.testing.assert_array_equal(in_flight[sample_id][0], prob)
        assert in_flight[sample_id][1:] == (n_seg, text)
