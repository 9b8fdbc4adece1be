"""``audiomill push OUT --repo REPO``: a finished output folder to a Hugging Face dataset repository.

What goes is :func:`audiomill.card.finished_files`: the dataset card (written again first, from the
complete shards) and every complete shard's files; journals, temporary files, ``_audiomill/`` and
shards not complete never go. The upload is ``huggingface_hub``'s resumable large-folder upload
(``upload_large_folder``), restricted to those files: interrupted, the same command goes on.
"""

from __future__ import annotations

import logging
import os

from audiomill.card import finished_files, write_card
from audiomill.errors import UsageError
from audiomill.runner.state import OutputFolder

log = logging.getLogger(__name__)


def push(out: str, repo: str, private: bool = False, dry_run: bool = False) -> list[str]:
    """Upload the finished files of ``out`` to the dataset repo ``repo``; returns them (relative to ``out``)."""
    folder = OutputFolder(os.path.abspath(out))
    if not folder.exists():
        raise UsageError(f"{out} holds no audiomill run (no _audiomill/plan.json)")
    if "/" not in repo.strip("/") or repo.count("/") != 1:
        raise UsageError(f"--repo {repo}: expected NAMESPACE/NAME, e.g. me/my-tokens")
    write_card(folder)
    files = finished_files(folder)
    if len(files) <= 1:
        raise UsageError(f"{out} has no complete shard yet: nothing to push")
    if dry_run:
        return files
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise UsageError(f"push needs huggingface_hub ({exc}): pip install 'audiomill[datasets]'") from None
    api = HfApi()
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    api.upload_large_folder(repo_id=repo, folder_path=folder.out, repo_type="dataset", allow_patterns=files)
    log.info("pushed %d files to https://huggingface.co/datasets/%s", len(files), repo)
    return files
