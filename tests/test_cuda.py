"""The GPU path (CUDA, bf16 autocast): runs only where a CUDA GPU is visible; CI has none, so these run on
GPU machines (reports/gpu records the last such run)."""
import math

import pytest
import torch

from clpeft.config import resolve
from clpeft.run import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LENET = {"model": {"backbone": "lenet", "pretrained": False}}


@pytest.mark.parametrize("strategy,pet,extra", [
    ("finetune", "lora", {}),
    ("lae", "adapter", {}),
    ("wa", "adapter", {"options": {"memory_size": 20}}),
    ("exssnet", "supermask", LENET),
    ("prototype", None, {}),
])
def test_bf16_run_on_cuda_is_deterministic_and_close_to_fp32(fast_scenario, strategy, pet, extra):
    bf16 = resolve(fast_scenario, strategy=strategy, pet=pet, device="cuda", amp="bf16", overrides=extra)
    a, b = run(bf16), run(bf16)
    assert a["accuracy_matrix"] == b["accuracy_matrix"], "same seed on the same GPU must give the same matrix"
    assert "cuda" in a["runtime"]["peak_memory_kind"] and a["runtime"]["peak_memory_mb"] > 0
    fp32 = run(resolve(fast_scenario, strategy=strategy, pet=pet, device="cuda", amp="off", overrides=extra))
    final = [a["metrics"]["final_accuracy"], fp32["metrics"]["final_accuracy"]]
    assert all(math.isfinite(x) for x in final)
    assert abs(final[0] - final[1]) < 0.15, f"bf16 and fp32 final accuracy differ too much: {final}"


def test_resume_on_cuda_gives_the_same_results_file(tmp_path, fast_scenario):
    config = resolve(fast_scenario, strategy="lae", pet="adapter", device="cuda", amp="bf16")

    def crash(i, strategy, stream):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(config, out_dir=tmp_path / "a", after_experience=crash)
    run(config, out_dir=tmp_path / "a", resume=True)
    run(config, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


@pytest.mark.parametrize("kind", ["adapter", "lora", "prefix", "prompt"])
def test_pet_bank_mixing_per_sample_on_cuda_bf16(kind):
    """Bank mode on the GPU under bf16 autocast: a sample in a mixed batch gets what it gets alone."""
    import timm

    from clpeft.pet import inject_named_pet

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8)
    pet = inject_named_pet(model, kind, name="e0")
    pet.add("e1")
    pet.add("e2")
    with torch.no_grad():
        for name in pet.names:
            for p in pet.parameters(name):
                p.normal_(0, 0.05)
    model.cuda().eval()
    x = torch.randn(6, 3, 32, 32, device="cuda")
    w = torch.softmax(torch.randn(6, 3, device="cuda"), dim=1)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with pet.mixing(pet.names, w):
            together = model(x).float()
        alone = []
        for b in range(6):
            with pet.mixing(pet.names, w[b:b + 1]):
                alone.append(model(x[b:b + 1]).float())
    assert torch.isfinite(together).all()
    # bf16 rounding differs with the batch's kernel choice; the mixture itself must not
    assert torch.allclose(together, torch.cat(alone), atol=0.05, rtol=0.02)
