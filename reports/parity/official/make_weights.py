"""The shared backbone for the official side: clpeft's vit_tiny_fmnist_32, exactly as clpeft builds it."""
from safetensors.torch import save_file
from clpeft.models.backbones import create_backbone
net, spec = create_backbone("vit_tiny_fmnist_32", pretrained=True)
print(spec.input_size, spec.in_chans, net.pos_embed.shape)
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, "/tmp/parity_coda/vit32.safetensors")
