"""Unpack Amphion's RepCodec (MaskGCT's semantic codec) into .cache/reference-maskgct.

Amphion is not on PyPI, but its model code is, inside the ``maskgct`` sdist (a
repackaging of Amphion's MaskGCT). Only the semantic codec's modules are taken: the
Vocos backbone, the factorised/residual quantizers and RepCodec itself, under a package
named ``amphion_reference``. The tests load MaskGCT-layout checkpoints saved by this
reference class through audiomill and compare codes. Test dependency only.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
import tempfile

VERSION = "0.0.19"
TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "reference-maskgct")
PACKAGE = "amphion_reference"
# what RepCodec imports, relative to maskgct/maskgct/ in the sdist
MODULES = ("codec/kmeans/repcodec_model.py", "codec/kmeans/vocos.py", "codec/amphion_codec/quantize/__init__.py",
           "codec/amphion_codec/quantize/factorized_vector_quantize.py",
           "codec/amphion_codec/quantize/residual_vq.py", "codec/amphion_codec/quantize/vector_quantize.py",
           "codec/amphion_codec/quantize/lookup_free_quantize.py")


def main() -> int:
    root = os.path.join(TARGET, PACKAGE)
    if os.path.isfile(os.path.join(root, MODULES[0])):
        return 0
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"maskgct=={VERSION}", "-d", download], check=True)
        [sdist] = glob.glob(os.path.join(download, "maskgct-*.tar.gz"))
        prefix = f"maskgct-{VERSION}/maskgct/maskgct/"
        with tarfile.open(sdist) as archive:
            for module in MODULES:
                source = archive.extractfile(prefix + module)
                path = os.path.join(root, module)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as out:
                    out.write(source.read())
    for folder in ("", "codec", "codec/kmeans", "codec/amphion_codec"):  # packages, without their heavy __init__s
        open(os.path.join(root, folder, "__init__.py"), "a").close()
    print(f"reference RepCodec (maskgct {VERSION} sdist) in {os.path.normpath(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
