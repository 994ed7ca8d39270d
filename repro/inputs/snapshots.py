"""Downloading one Hub repository snapshot for `repro fetch`, and what can go wrong on the way.

huggingface_hub's `snapshot_download` does the transfer: a dry run first (the size plan and
the disk check), then the files, skipping those already in the cache. Around it, what the
client does not do:
- it checks an LFS file only by its size; here every file it just downloaded whose cache
  name is a sha256 (LFS and Xet files: the X-Linked-Etag the Hub sends) is hashed against it,
  and a mismatch is removed and reported;
- a download killed mid-file leaves its partial copy (`<etag>.<random>.incomplete`, up to
  the whole file) that no later run reuses or removes; it is removed here, unless another
  process is writing it (it holds the file's download lock);
- its failures become one line that says what to do: a gated model without a token or
  without an accepted licence, a token the Hub rejects, a repository or revision that does
  not exist, a connection that keeps breaking, a full disk.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.files import disk_error, sha256_file
from repro.inputs import hubcache

Log = Callable[[str], None]
SHA256 = re.compile(r"[0-9a-f]{64}")


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_online() -> None:
    from repro.inputs.models import hub_offline

    if hub_offline():
        raise ReproError("HF_HUB_OFFLINE is set, but fetch must download; run it without "
                         "HF_HUB_OFFLINE (e.g. `env -u HF_HUB_OFFLINE repro fetch ...`)")


def download(item: hubcache.HubItem, log: Log = print) -> int:
    """Download (or complete) one snapshot into the Hub cache; returns its size in bytes."""
    from huggingface_hub import snapshot_download

    from repro.inputs.models import hf_token

    cached = hubcache.cached_snapshot(item)[0]
    if cached is not None:  # complete: keep the snapshot the first fetch pinned, no network
        size = hubcache.folder_bytes(cached)
        log(f"{item.kind} {item.label} ({item.repo_id}@{item.revision}): cached, {gb(size)}")
        return size
    check_online()
    token = hf_token()
    if item.gated and not token:
        raise ReproError(_gated_fix(item, "HF_TOKEN is not set"))
    kwargs: dict[str, Any] = dict(revision=item.revision, allow_patterns=list(item.allow),
                  ignore_patterns=list(item.ignore) or None, token=token)
    with hub_errors(item, token):
        plan = snapshot_download(item.repo_id, dry_run=True, **kwargs)
        if not plan:
            raise ReproError(f"{item.kind} {item.label}: no file of {item.repo_id} matches "
                             f"{', '.join(item.allow)}; check the study file")
        total = sum(f.file_size or 0 for f in plan)
        todo = sum(f.file_size or 0 for f in plan if f.will_download)
        _check_space(hubcache.hub_cache(), todo, item.label)
        freed = remove_abandoned_partials(item.repo_id)
        left = f" (removed {gb(freed)} an interrupted download left)" if freed else ""
        log(f"{item.kind} {item.label} ({item.repo_id}@{item.revision}): {len(plan)} files, "
            f"{gb(total)}, {gb(todo)} to download{left}")
        snapshot_download(item.repo_id, **kwargs)  # skips cached files
    verify_downloaded(item, [f for f in plan if f.will_download])
    log(f"{item.kind} {item.label}: downloaded, {gb(total)} in the Hub cache")
    return total


def _check_space(folder: Path, need: int, what: str) -> None:
    where, free = hubcache.free_bytes(folder)
    if need > free:
        raise ReproError(f"not enough disk for {what}: {gb(need)} to download, {gb(free)} "
                         f"free at {where}; free space or point HF_HOME at a larger disk")


def _storage(repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hubcache.hub_cache() / repo_folder_name(repo_id=repo_id, repo_type="model")


def remove_abandoned_partials(repo_id: str) -> int:
    """Remove the partial downloads a killed process left in the repository's cache; bytes.

    huggingface_hub writes each download to `blobs/<etag>.<random>.incomplete` under the
    lock `.locks/<repo folder>/<etag>.lock`; a file whose lock is free has no writer left.
    """
    from filelock import FileLock, Timeout

    storage = _storage(repo_id)
    freed = 0
    for partial in sorted((storage / "blobs").glob("*.incomplete")):
        etag = partial.name.split(".", 1)[0]
        lock = FileLock(hubcache.hub_cache() / ".locks" / storage.name / f"{etag}.lock",
                        mode=0o664)  # as huggingface_hub creates it: a cache users share
        try:
            with lock.acquire(timeout=0):
                size = partial.stat().st_size
                partial.unlink()
                freed += size
        except (Timeout, FileNotFoundError):  # being written by another process, or gone
            continue
    return freed


def verify_downloaded(item: hubcache.HubItem, files: list[Any]) -> None:
    """Hash every just-downloaded file the cache names by its sha256 (LFS and Xet files)
    against that name; a mismatch is removed (blob and snapshot link) and reported."""
    for info in files:
        link = Path(info.local_path)
        blob = link.resolve()
        if not SHA256.fullmatch(blob.name) or not blob.is_file():
            continue
        digest = sha256_file(blob)
        if digest != blob.name:
            link.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            raise ReproError(
                f"{item.repo_id}/{info.filename} arrived with sha256 {digest[:12]}..., but the "
                f"Hub lists {blob.name[:12]}...; the file was removed. Rerun `repro fetch`; if "
                "it happens again, something between you and the Hub alters downloads (a "
                "proxy?) or the disk corrupts them")


def _gated_fix(item: hubcache.HubItem, why: str) -> str:
    return (f"{item.kind} {item.label} ({item.repo_id}) is gated and {why}: accept its licence "
            f"at https://huggingface.co/{item.repo_id} while logged in, create a read token at "
            "https://huggingface.co/settings/tokens and export HF_TOKEN=<token>")


@contextlib.contextmanager
def hub_errors(item: hubcache.HubItem, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub's failures into one line that says what to do."""
    try:
        yield
    except ReproError:
        raise
    except Exception as exc:  # classified below; anything unknown is re-raised as it is
        chain: list[BaseException] = [exc]
        while chain[-1].__cause__ is not None and len(chain) < 5:
            chain.append(chain[-1].__cause__)
        message = _classify(item, token, chain)
        if message is None:
            raise
        raise ReproError(message) from None


def _classify(item: hubcache.HubItem, token: str | None, chain: list[BaseException]) -> str | None:
    import httpx2
    from huggingface_hub import errors

    first = first_line(chain[-1], token)
    for err in chain:
        if isinstance(err, OSError) and disk_error(err, hubcache.hub_cache()) is not None:
            return (f"the disk of {hubcache.hub_cache()} filled up while fetching {item.repo_id} "
                    f"({first_line(err, token)}); free space or point HF_HOME at a larger disk, "
                    "then rerun `repro fetch` (finished files are kept)")
        if isinstance(err, errors.GatedRepoError):
            return _gated_fix(item, "access was refused" if token else "HF_TOKEN is not set")
        if isinstance(err, errors.RevisionNotFoundError):
            return (f"{item.repo_id} has no revision {item.revision!r}; fix the revision in the "
                    "study file")
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401 and token:
            return (f"HF_TOKEN was rejected (401) for {item.repo_id}: create a new read token at "
                    "https://huggingface.co/settings/tokens and export HF_TOKEN=<token>")
        if isinstance(err, errors.RepositoryNotFoundError):
            hint = ("and that this HF_TOKEN may see it" if token else
                    "or export HF_TOKEN if it is private or gated")
            return (f"{item.repo_id} was not found on the Hub; check the id in the study file "
                    f"{hint}")
        if isinstance(err, httpx2.TransportError | ConnectionError) and not isinstance(
                err, httpx2.ConnectError | httpx2.TimeoutException):
            return (f"the connection to the Hub broke while downloading {item.repo_id} "
                    f"({first_line(err, token)}), also on retrying; check the network or "
                    "HTTPS_PROXY and rerun `repro fetch` (finished files are kept)")
    if isinstance(chain[0], OSError | errors.DryRunError | httpx2.TransportError):
        return (f"cannot reach the Hugging Face Hub for {item.repo_id} ({first}); check the "
                "network or HTTPS_PROXY and rerun `repro fetch` (finished files are kept)")
    return None


def first_line(exc: BaseException, token: str | None) -> str:
    """The exception's first line, shortened, with the token (if any) masked."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return text.replace(token, "***") if token else text
