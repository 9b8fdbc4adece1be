"""Unpack torchaudio's pure-Python code (no compiled extension) into .cache/reference-torchaudio.

PyPI's torchaudio wheels do not load with a CPU-only torch, but their Python functions
(``functional.resample``) run without the compiled extension. The tests compare
audiomill's own resampler (audiomill.codecs.torchaudio_compat) with them, bit for bit.
This is a test dependency only: audiomill itself never imports it.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

VERSION = "2.11.0"
TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "reference-torchaudio")


def main() -> int:
    if os.path.isfile(os.path.join(TARGET, "torchaudio", "functional", "functional.py")):
        return 0
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"torchaudio=={VERSION}",
                        "-d", download], check=True)
        [wheel] = glob.glob(os.path.join(download, "torchaudio-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith("torchaudio/") and member.endswith(".py"):
                    archive.extract(member, TARGET)
    print(f"reference torchaudio {VERSION} (Python code only) in {os.path.normpath(TARGET)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
