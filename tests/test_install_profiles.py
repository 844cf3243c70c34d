"""Install profiles: constraints/cuda.txt states the torch + xformers pair, and it must agree with what
the installed xformers says it was built for; a mismatched xformers is one line naming both torches."""
import re
import subprocess

import pytest
import torch

from archs.layers import attention
from tests.helpers import ROOT


def pins(profile: str) -> dict[str, str]:
    text = (ROOT / "constraints" / f"{profile}.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M))


def test_each_profile_pins_torch_and_pyproject_does_not():
    assert set(pins("cuda")) == {"torch", "xformers"} and set(pins("cpu")) == {"torch"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'"torch==', pyproject), "torch is pinned by constraints/<profile>.txt, not pyproject"


def test_the_makefile_picks_the_profile_from_nvidia_smi():
    out = subprocess.run(["make", "-n", "-B", "setup", "PROFILE=cuda"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "-c constraints/cuda.txt" in out
    out = subprocess.run(["make", "-n", "-B", "setup", "PROFILE=cpu"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "-c constraints/cpu.txt" in out
    assert "nvidia-smi" in (ROOT / "Makefile").read_text()


def test_declared_pair_agrees_with_xformers_build_metadata():
    build = attention.xformers_build()
    if build is None:
        pytest.skip("xformers is not installed here")
    declared = pins("cuda")
    if build["version"] != declared["xformers"]:
        pytest.skip(f"xformers {build['version']} installed, not the declared {declared['xformers']}")
    built_for = build.get("built_for_torch")
    assert built_for, "xformers' cpp_lib.json names the torch it was built for"
    assert built_for.split("+")[0] == declared["torch"], (build, declared)


def test_xformers_runs_with_its_pair_and_otherwise_names_both_torches():
    """With the declared pair on a GPU the kernels run; with any other torch (or on a CPU, which has
    no xformers kernels) the reason is one line naming the installed torch and xformers' own."""
    build = attention.xformers_build()
    if build is None:
        pytest.skip("xformers is not installed here")
    declared = pins("cuda")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    why = attention._xformers_probe.__wrapped__(device, torch.bfloat16)
    matched = (torch.__version__.split("+")[0] == declared["torch"] and build["version"] == declared["xformers"])
    if device == "cuda" and matched:
        assert why is None, why
        return
    assert why is not None and "\n" not in why
    assert f"torch {torch.__version__} is installed" in why
    assert f"built for torch {build.get('built_for_torch') or build.get('requires_torch')}" in why


def test_auto_records_what_ran_and_why_the_others_did_not():
    choice = attention.backend_choice("auto", "sdpa", torch.device("cpu"), torch.float32)
    assert choice["asked"] == "auto" and choice["ran"] == "sdpa"
    assert "CUDA" in choice["not_chosen"]["xformers"] and "oracle" in choice["not_chosen"]["math"]
    assert set(attention.backend_choice("math", "math", torch.device("cpu"), torch.float32)["not_chosen"]) == \
        {"sdpa", "xformers"}
