#!/usr/bin/python3
# make_seeds.py: writes the small seed corpora of tests/fuzz/corpus/ (committed; rerun to
# regenerate): tiny images made with PIL, tiny checkpoints made with torch.save, and short
# annotation, results and run files like the ones the programs write. Run with Debian's
# /usr/bin/python3 (python3-pil, python3-torch).
import io
import os

import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def img_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def images():
    rgb = Image.new("RGB", (9, 7))
    for y in range(7):
        for x in range(9):
            rgb.putpixel((x, y), (x * 28, y * 36, (x + y) * 15))
    put("image", "rgb.jpg", img_bytes(rgb, "JPEG", quality=50))
    put("image", "progressive.jpg", img_bytes(rgb, "JPEG", quality=50, progressive=True))
    put("image", "restart.jpg", img_bytes(rgb.resize((17, 9)), "JPEG", quality=30,
                                           subsampling=2, restart_marker_blocks=1))
    put("image", "gray.jpg", img_bytes(rgb.convert("L"), "JPEG", quality=50))
    put("image", "cmyk.jpg", img_bytes(rgb.convert("CMYK"), "JPEG", quality=50))
    put("image", "rgb.png", img_bytes(rgb, "PNG"))
    put("image", "rgba.png", img_bytes(rgb.convert("RGBA"), "PNG"))
    put("image", "palette.png", img_bytes(rgb.convert("P", palette=Image.ADAPTIVE, colors=8), "PNG"))
    put("image", "gray_alpha.png", img_bytes(rgb.convert("LA"), "PNG"))
    put("image", "stored.png", img_bytes(rgb, "PNG", compress_level=0))
    put("image", "anim.gif", img_bytes(rgb.convert("P", palette=Image.ADAPTIVE, colors=4), "GIF"))


def checkpoints():
    torch.manual_seed(0)
    sd = {"fc.weight": torch.randn(2, 3), "fc.bias": torch.randn(2),
          "bn.num_batches_tracked": torch.tensor(3), "h": torch.randn(2).half()}
    b = io.BytesIO()
    torch.save(sd, b)
    put("pth", "small.pth", b.getvalue())
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1))
    b = io.BytesIO()
    torch.save(m.state_dict(), b)
    put("pth", "module.pth", b.getvalue())


def texts():
    put("dataset", "trainval.txt", "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
        "Abyssinian_100 1 1 1\namerican_bulldog_10 2 2 1\nyorkshire_terrier_9 37 2 25\n")
    put("dataset", "crlf.txt", "Bengal_1 6 1 3\r\n\r\nBengal_2 6 1 3\r\n")
    put("flatjson", "results.json", '%.3f\n{"images": 7349, "val_acc": 0.9123456789012345, '
        '"weights": "imagenet", "name": "caf\\u00e9 \\"x\\"", "loss": -1.5e-3}\n')
    put("flatjson", "scaled.json", '*100|%.1f\n{"a": 1e2, "b": "s\\n\\t\\\\/"}')
    put("flatjson", "empty.json", "\n{}")
    put("runfiles", "epochs.csv", "epoch,train_loss,val_loss,val_acc,lr,seconds\n"
        "1,2.5,1.25,0.5,0.001,10.5\n2,1.5,1.0,0.75,0.001,10.25\n")
    put("runfiles", "predictions.csv", "index,name,label,pred,prob_pred,prob_label,label_name,"
        "pred_name\n0,Abyssinian_201,0,0,0.9,0.9,Abyssinian,Abyssinian\n"
        "1,Bengal_7,5,0,0.5,0.25,Bengal,Abyssinian\n")
    put("runfiles", "predictions_plain.csv", "index,name,label,pred,prob_pred,prob_label\n"
        "0,american_pit_bull_terrier_12,2,3,0.75,0.125\n")
    sep = "\n@@@@\n"
    put("docgen", "chapter.md", "# Title\n\nAccuracy {{99-fuzz:val_acc|*100|%.1f}} % on "
        "{{99-fuzz:images|%d}} images, `{{99-fuzz:path|raw}}` {{99-fuzz:path|basename}}.\n\n"
        "![pets]({{figure:pets.png}})\n\n{{code:s.c#main}}\n\n"
        "{{table:99-fuzz.csv|epoch,val_acc:*100|%.1f}}\n\n\\{{literal}}\n" + sep +
        '{"val_acc": 0.5, "images": 12, "path": "a/b/c.pth", "weights_pretrained": 1}' + sep +
        "epoch,val_acc\n1,0.5\n2,\"0,75\"\n" + sep +
        "int x;\n// region: main\nint main(void) {\n    return 0;\n}\n// endregion\n")
    put("docgen", "random.md", "# Random\n\n{{99-fuzz:weights}}\n\n{{table:99-fuzz.csv}}\n" + sep +
        '{"weights": "random", "weights_pretrained": 0}' + sep + "a,b\nx,1\n" + sep + "")


images()
checkpoints()
texts()
