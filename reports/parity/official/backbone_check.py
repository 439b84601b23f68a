"""The two backbones are one: the official VisionTransformer loaded with the shared weights gives clpeft's features."""
import sys, torch
sys.path.insert(0, "/tmp/coda")
torch.set_num_threads(1)
torch.Tensor.cuda = lambda self, *a, **k: self
from models import vit as coda_vit
from safetensors.torch import load_file
from clpeft.config import load_scenario, resolve
from clpeft.run import build
from clpeft.streams.stream import materialize
feat = coda_vit.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=96, depth=6, num_heads=3, ckpt_layer=0, drop_path_rate=0)
feat.load_state_dict(load_file("/tmp/parity_coda/vit32.safetensors"), strict=False); feat.eval()
b = build(resolve(load_scenario("digits32_b0_inc2"), strategy="prototype"))
stream, model = b.stream, b.model
model.eval()
x, y = materialize(stream.test_stream[0].dataset)
with torch.no_grad():
    ours = model.features(x)
    theirs, _ = feat(model.input(x) if hasattr(model, "input") else model.adapter(x))
    theirs = theirs[:, 0]
print("max abs diff", float((ours - theirs).abs().max()), "scale", float(ours.abs().max()))
