"""Checks that bench/accuracy/reference.py's ResNet-18 is torchvision's at
base width 64 (names, shapes, outputs with the same weights) and scales
every channel count with --base-width the way selfsup's does; prints JSON."""
import json
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench", "accuracy"))
import reference  # noqa: E402

torch.manual_seed(0)
tv = torchvision.models.resnet18()
tv.fc = torch.nn.Identity()
ours = reference.ResNet18(64, small_stem=False)
tv_sd = {k: v for k, v in tv.state_dict().items()}
ours_sd = ours.state_dict()
same_names = sorted(tv_sd) == sorted(ours_sd)
same_shapes = same_names and all(tv_sd[k].shape == ours_sd[k].shape for k in tv_sd)
ours.load_state_dict(tv_sd)
tv.eval(), ours.eval()
x = torch.rand(2, 3, 64, 64)
diff = (tv(x) - ours(x)).abs().max().item()
narrow = reference.ResNet18(16, small_stem=True).state_dict()
scaled = True
for k, v in ours_sd.items():
    want = [d // 4 if i < 2 and not (k == "conv1.weight" and i == 1) else d for i, d in enumerate(v.shape)]
    if k == "conv1.weight":
        want[2:] = [3, 3]
    scaled &= list(narrow[k].shape) == want
print(json.dumps({"same_names": same_names, "same_shapes": same_shapes, "max_diff": diff, "scaled": scaled,
                  "features": reference.ResNet18(16, True)(torch.rand(2, 3, 28, 28)).shape[1]}))
