#!/usr/bin/python3
# tests/gen_class_names.py: writes the class-name lists that build/predict embeds, from
# torchvision 0.14 itself (Debian's python3-torchvision; run by developers, not by `make test`):
#   data/imagenet_classes.txt  ResNet34_Weights.IMAGENET1K_V1.meta["categories"], index order
#   data/pets_classes.txt      the 37 Oxford-IIIT Pet breeds in label order (CLASS-ID - 1), named
#                              by torchvision.datasets.OxfordIIITPet's own derivation, run on a
#                              stand-in dataset folder holding one annotation line per breed.
# With --check it only verifies that the committed files equal what torchvision gives.
import os
import sys
import tempfile

import torchvision
from torchvision.datasets import OxfordIIITPet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The image-name prefixes of the official download (annotations/list.txt), by CLASS-ID 1..37.
PET_PREFIXES = [
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher",
    "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
]


def pets_classes():
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "oxford-iiit-pet")
        os.makedirs(os.path.join(base, "images"))
        os.makedirs(os.path.join(base, "annotations"))
        with open(os.path.join(base, "annotations", "trainval.txt"), "w") as f:
            # reversed, so the order must come from the class ids, as in torchvision
            for cid, prefix in reversed(list(enumerate(PET_PREFIXES, start=1))):
                species = 1 if prefix[0].isupper() else 2  # cats are capitalised in the dataset
                f.write("%s_1 %d %d 1\n" % (prefix, cid, species))
        ds = OxfordIIITPet(tmp, split="trainval")
        assert len(ds.classes) == 37
        return ds.classes


def main():
    imagenet = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(imagenet) == 1000
    files = {"imagenet_classes.txt": imagenet, "pets_classes.txt": pets_classes()}
    bad = 0
    for name, names in files.items():
        path = os.path.join(ROOT, "data", name)
        text = "".join(n + "\n" for n in names)
        if "--check" in sys.argv:
            with open(path) as f:
                same = f.read() == text
            print(path, "matches torchvision" if same else "DIFFERS from torchvision")
            bad += not same
        else:
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
            print("wrote", path, len(names), "names")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
