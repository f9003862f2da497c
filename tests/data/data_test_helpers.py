"""Small file helpers shared by the data tests (a uniquely named module, not conftest)."""

import io
import os

from PIL import Image


def encode(array, fmt):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def write_folder(root, files):
    """files: {relative path: bytes}."""
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
