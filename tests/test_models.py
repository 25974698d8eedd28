"""Model files: caches built once, safely, when processes race for them."""

import os
import shutil
import subprocess
import sys

from conftest import DATA


def test_two_processes_building_the_same_cache_both_get_a_complete_model(tmp_path, monkeypatch):
    """bundled:base ships as two parts that are joined once into ASRFLOW_HOME; two processes at once must not
    collide (one builds, the other waits for it)."""
    code = (
        "from asrflow import load_transcriber; "
        "print(load_transcriber('bundled:base').transcribe({!r}, language='de').text)".format(str(DATA / "german.mp3"))
    )
    env = {**os.environ, "ASRFLOW_HOME": str(tmp_path)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0 and "Berlin" in out, err[-2000:]
    listed = lambda: sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock"))
    models = listed()
    # the joined weights and their encoder for OpenVINO, each once, and the encoder's silent window: no temp or
    # partial leftovers (the builders' lock files stay)
    assert [m.split("-")[0] for m in models] == ["bundled", "openvino", "silence"], models
    assert all((tmp_path / "models" / m / ".complete").is_file() for m in models[:2])
    assert {p.suffix for p in (tmp_path / "models" / models[2]).iterdir()} == {".npy"}
    # a copy of the model elsewhere (as MLflow's artifacts of a logged model are) finds the encoder built for it
    from asrflow import load_transcriber

    copy = shutil.copytree(tmp_path / "models" / models[0], tmp_path / "copy", ignore=shutil.ignore_patterns(".*"))
    monkeypatch.setenv("ASRFLOW_HOME", str(tmp_path))
    assert "Berlin" in load_transcriber(str(copy)).transcribe(DATA / "german.mp3", language="de").text
    assert listed() == models
