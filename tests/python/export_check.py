"""Loads an exported backbone into torchvision and compares its eval
features with selfsup's: prints {missing, unexpected, featureError}."""
import json
import sys

import torch
import torchvision

import st

arch, export, images, native = sys.argv[1:5]
model = getattr(torchvision.models, arch)()
result = model.load_state_dict(st.load(export), strict=False)
model.fc = torch.nn.Identity()
model.eval()
with torch.no_grad():
    ref = model(st.load(images)["images"])
got = st.load(native)["features"]
err = ((got - ref).abs().max() / ref.abs().max()).item()
print(json.dumps({"missing": sorted(result.missing_keys), "unexpected": sorted(result.unexpected_keys), "featureError": err}))
