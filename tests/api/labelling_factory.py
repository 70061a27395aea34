"""A small synthetic MVTec-layout dataset for the labelling tests (Pillow images under tmp_path)."""
import hashlib
from pathlib import Path

from PIL import Image as PILImage, ImageDraw

from annotator.models import Dataset, Image, Product


def _png(path: Path, colour, *, size=64, mask_box=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask_box is not None:
        picture = PILImage.new("L", (size, size), 0)
        ImageDraw.Draw(picture).rectangle(mask_box, fill=255)
    else:
        picture = PILImage.new("RGB", (size, size), colour)
        ImageDraw.Draw(picture).ellipse((8, 8, size - 8, size - 8), fill=(200, 200, 210))
    picture.save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_dataset(root: Path, *, name="demo", overlap=1, products=(("widget", "object", 4), ("fabric", "texture", 3)),
                 good_train=2, size=64, defect_types=("crack", "stain")) -> Dataset:
    """Dataset ``name`` under ``root/name`` with, per product, ``good_train`` train/good images and
    the given number of anomalous test images (defect types alternate, crack / stain) with masks."""
    dataset_root = root / name
    dataset = Dataset.objects.create(name=name, layout=Dataset.Layout.MVTEC, root=str(dataset_root),
                                     label_overlap=overlap)
    for product_name, kind, anomalous in products:
        product = Product.objects.create(dataset=dataset, name=product_name, kind=kind)
        for i in range(good_train):
            rel = f"{product_name}/train/good/{i:03d}.png"
            checksum = _png(dataset_root / rel, (40, 60 + 10 * i, 90), size=size)
            Image.objects.create(product=product, split="train", is_anomalous=False, defect_type="good",
                                 path=rel, width=size, height=size, checksum=checksum)
        for i in range(anomalous):
            defect = defect_types[i % len(defect_types)]
            rel = f"{product_name}/test/{defect}/{i:03d}.png"
            mask_rel = f"{product_name}/ground_truth/{defect}/{i:03d}_mask.png"
            checksum = _png(dataset_root / rel, (90, 40, 40 + 10 * i), size=size)
            _png(dataset_root / mask_rel, None, size=size, mask_box=(10 + i, 12, 30 + i, 40))
            Image.objects.create(product=product, split="test", is_anomalous=True, defect_type=defect,
                                 path=rel, mask_path=mask_rel, width=size, height=size, checksum=checksum)
        rel = f"{product_name}/test/good/000.png"
        checksum = _png(dataset_root / rel, (40, 60, 90), size=size)
        Image.objects.create(product=product, split="test", is_anomalous=False, defect_type="good",
                             path=rel, width=size, height=size, checksum=checksum)
    return dataset
