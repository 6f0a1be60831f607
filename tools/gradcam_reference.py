#!/usr/bin/python3
"""Grad-CAM reference in PyTorch, for parity checks of `dermal run --cam`.

usage:
  /usr/bin/python3 tools/gradcam_reference.py --arch NAME --image JPG \
      --tensor-out X.npy --cam-out CAM.npy [--method gradcam|gradcampp]
      [--class K]

Builds torchvision's NAME exactly as tools/export_torchvision.py exports it
(same seeded weights), preprocesses IMAGE as torchvision does (Resize(256),
CenterCrop(224), ToTensor, ImageNet Normalize) and saves that tensor (so
dermal runs on the identical input), then computes the CAM with a forward
hook on the target module (the last feature map before global pooling, the
layer pytorch-grad-cam users pick) and a tensor hook for its gradient:
  Grad-CAM    w_k = mean(g_k);  cam = relu(sum_k w_k A_k)
  Grad-CAM++  as pytorch-grad-cam's GradCAMPlusPlus
  HiResCAM    cam = relu(sum_k g_k * A_k)
The raw map (h x w, after ReLU, before normalisation) goes to CAM.npy and the
explained class index is printed on stdout.

An earlier target: --target MODULE (a dotted submodule path, e.g. `layer3`
of ResNet or `features.14` of MobileNetV2) hooks that module instead.
  /usr/bin/python3 tools/gradcam_reference.py --arch NAME --target MODULE \
      --onnx-tensor MODEL.onnx
prints the name of that module's output tensor in the exported file (the
output of the last node in its `/a/a.b/` name scope), for
`dermal run --cam-target`."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_torchvision as ex  # noqa: E402

# module whose output is the tensor dermal picks automatically (the input of
# the global pooling)
TARGETS = {
    "resnet18": "layer4", "resnet50": "layer4",
    "mobilenet_v2": "features", "mobilenet_v3_small": "features",
    "mobilenet_v3_large": "features", "efficientnet_b0": "features",
    "regnet_y_400mf": "trunk_output", "mnasnet1_0": "layers",
    "shufflenet_v2_x1_0": "conv5",
}


def default_model(path):
    """MobileNetV2TF with 7 outputs, weights read from the ONNX file by the
    parameter names torch.onnx.export kept; fails loudly if any is missing."""
    import onnx
    import torch
    from onnx import numpy_helper
    import tflite_mobilenet as tm
    labels = None
    m = onnx.load(path)
    for p in m.metadata_props:
        if p.key == "labels":
            labels = p.value.split(",")
    model = tm.MobileNetV2TF(num_classes=len(labels))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    sd = model.state_dict()
    missing = [k for k in sd if k not in inits]
    if missing:
        raise SystemExit("default model: %d parameters not found by name in %s "
                         "(first: %s)" % (len(missing), path, missing[0]))
    model.load_state_dict({k: torch.from_numpy(inits[k].copy()) for k in sd})
    return model.eval()


def onnx_tensor(path, module):
    """Output of the last node of module's name scope in an exported file
    (torch.onnx names nodes /layer3/layer3.1/relu_1/Relu and
    /features/features.5/features.5.0/block/block.0/block.0.0/Conv: a
    numeric part extends the previous scope, a name starts a new one)."""
    import onnx
    scopes = []
    for p in module.split("."):
        scopes.append(scopes[-1] + "." + p if p.isdigit() and scopes else p)
    scope = "/" + "/".join(scopes) + "/"
    nodes = [n for n in onnx.load(path).graph.node if n.name.startswith(scope)]
    if not nodes:
        raise SystemExit("no node in scope %s of %s" % (scope, path))
    return nodes[-1].output[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(TARGETS))
    ap.add_argument("--default-model", metavar="ONNX",
                    help="dermal's default model: rebuilt in PyTorch from "
                         "tools/tflite_mobilenet.py's MobileNetV2TF with the "
                         "ONNX file's weights (loaded by parameter name), "
                         "preprocessed as its metadata says (direct 224 "
                         "resize, mean/std 0.5)")
    ap.add_argument("--target", metavar="MODULE",
                    help="dotted submodule whose output is the target "
                         "(default: the last feature map, see TARGETS)")
    ap.add_argument("--onnx-tensor", metavar="ONNX",
                    help="print the target module's output tensor name in "
                         "this exported file and exit")
    ap.add_argument("--image")
    ap.add_argument("--tensor-out")
    ap.add_argument("--cam-out")
    ap.add_argument("--method", default="gradcam",
                    choices=["gradcam", "gradcampp", "hirescam"])
    ap.add_argument("--class", dest="cls", type=int, default=-1)
    a = ap.parse_args()
    if a.onnx_tensor:
        print(onnx_tensor(a.onnx_tensor, a.target or TARGETS[a.arch]))
        return
    if not (a.image and a.tensor_out and a.cam_out):
        ap.error("--image, --tensor-out and --cam-out are required")

    import torch
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(1)
    if a.default_model:
        model = default_model(a.default_model)
        tf = transforms.Compose([
            transforms.Resize((224, 224)), transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
        target = "features"
    elif a.arch:
        model = ex.build_model(a.arch)
        tf = transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        target = TARGETS[a.arch]
    else:
        ap.error("--arch or --default-model is required")
    x = tf(Image.open(a.image).convert("RGB")).unsqueeze(0)
    np.save(a.tensor_out, x.numpy().astype(np.float32))

    mod = model.get_submodule(a.target or target)
    store = {}

    def fwd_hook(_m, _i, out):
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    h = mod.register_forward_hook(fwd_hook)
    x.requires_grad_(False)
    with torch.enable_grad():
        logits = model(x)
        c = int(logits.argmax()) if a.cls < 0 else a.cls
        model.zero_grad()
        logits[0, c].backward()
    h.remove()
    A = store["act"].detach().double().numpy()[0]   # (C, H, W)
    G = store["grad"].detach().double().numpy()[0]
    if a.method in ("gradcam", "hirescam"):
        w = G.mean(axis=(1, 2))
    else:
        g2, g3 = G ** 2, G ** 3
        sa = A.sum(axis=(1, 2))
        alpha = g2 / (2 * g2 + sa[:, None, None] * g3 + 1e-7)
        alpha = np.where(G != 0, alpha, 0)
        w = (np.maximum(G, 0) * alpha).sum(axis=(1, 2))
    if a.method == "hirescam":   # element-wise: relu(sum_k g_k * A_k)
        cam = np.maximum((G * A).sum(axis=0), 0)
    else:
        cam = np.maximum((w[:, None, None] * A).sum(axis=0), 0)
    np.save(a.cam_out, cam.astype(np.float32))
    print(c)


if __name__ == "__main__":
    main()
