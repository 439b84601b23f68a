"""The text path: fortune files → byte rows → a BERT-family encoder (MiniLM) with PET, JARe included."""
import pytest
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.models.continual_model import build_model
from clpeft.run import run
from clpeft.streams.datasets import encode_texts, load_fortunes

WORDS = {"cats": "purr whiskers mouse nap", "code": "compile bug stack python", "food": "bread cheese soup salt",
         "sea": "wave boat salt tide", "sky": "cloud star moon rain", "law": "court judge rule fine",
         "music": "song drum melody choir", "sport": "goal team match coach", "farm": "cow barn hay tractor",
         "war": "army battle sword siege", "art": "paint canvas brush museum"}


@pytest.fixture
def fortunes_root(tmp_path):
    """Eleven fake fortune files (``%``-separated entries), sizes 40, 37, …, so the class order is known."""
    g = torch.Generator().manual_seed(0)
    for i, (name, words) in enumerate(WORDS.items()):
        vocab = words.split()
        entries = [" ".join(vocab[j] for j in torch.randint(0, 4, (6,), generator=g).tolist()) + f" #{k}"
                   for k in range(40 - 3 * i)]
        (tmp_path / name).write_text("\n%\n".join(entries) + "\n%\n")
        (tmp_path / f"{name}.dat").write_bytes(b"index files are ignored")
    return tmp_path


def test_fortunes_are_read_by_category_largest_first(fortunes_root):
    train, test, spec = load_fortunes(root=fortunes_root, classes=4)
    assert spec.modality == "text" and len(train) + len(test) == 40 + 37 + 34 + 31
    row = train.images[0]
    text = bytes(row[row != 0].tolist()).decode()
    label = train.targets[0]
    assert text.split()[0] in list(WORDS.values())[label].split()
    with pytest.raises(ClpeftError, match="apt-get install fortunes"):
        load_fortunes(root=fortunes_root / "missing")
    with pytest.raises(ClpeftError, match="11 fortune categories, 12 asked"):
        load_fortunes(root=fortunes_root, classes=12)


def test_byte_rows_cut_on_a_character_boundary():
    rows = encode_texts(["é" * 200, ""], width=9)
    assert bytes(rows[0][rows[0] != 0].tolist()).decode() == "é" * 4 and rows[1].sum() == 0


def test_text_backbones_refuse_image_streams_and_back():
    from clpeft.streams.datasets import InputSpec

    with pytest.raises(ClpeftError, match="cannot read a text stream"):
        build_model("vit_tiny_fmnist_scratch", 4, InputSpec(1, 256, "text"), pretrained=False)
    with pytest.raises(ClpeftError, match="cannot read a image stream"):
        build_model("minilm_scratch", 4, InputSpec(1, 8), pretrained=False)


def text_scenario(root):
    return {"name": "text", "stream": {"dataset": "fortunes", "root": str(root), "n_experiences": 2},
            "model": {"backbone": "minilm_scratch", "pretrained": False, "head_init_std": 0.001},
            "train": {"epochs": 2, "lr": 0.002, "batch_size": 16, "eval_batch_size": 64},
            "strategies": {"jare": {"pet": "lora", "train": {"loss_scope": "current"}, "pet_settings": {
                "targets": ["bert.encoder.layer.*.attention.output.dense"], "rank": 4, "alpha": 4.0}}}}


def test_jare_and_finetune_run_on_a_text_stream(fortunes_root):
    scenario = text_scenario(fortunes_root)
    scenario["stream"]["class_order_seed"] = None
    jare = run(resolve(scenario, strategy="jare", overrides={"options": {"slots": 2, "groups": 4}}))
    assert jare["strategy_summary"]["bank_slots"] == 4 and len(jare["task_inference_matrix"]) == 2
    assert jare["parameters"]["pet"] == 2 * (4 * 96 + 96 * 4)  # one slot: A and B on 2 attention projections
    finetune = run(resolve(scenario, strategy="finetune"))
    assert finetune["accuracy_matrix"][0][0] > 0.5  # 5 separable word topics in experience 0, chance 0.2


def test_pretrained_minilm_loads_offline_and_embeds_similar_texts_closer():
    from clpeft.streams.datasets import InputSpec

    model = build_model("minilm", 2, InputSpec(1, 256, "text"), max_length=32).eval()
    rows = encode_texts(["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Interest rates rose in March."])
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.features(rows), dim=-1)
    assert f.shape == (3, 384)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2  # genuine sentence-embedding weights, not a random encoder
