"""Project-wide settings read from the environment.

Secrets (database URLs, API keys) are only ever read here and passed on; nothing in
this module prints them. Use :func:`redact` before putting any URL into a log line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home_dir() -> Path:
    """Folder for local state (embedded database, artifacts): ``HASTE_HOME`` or ``./.haste``."""
    return Path(os.environ.get("HASTE_HOME", PROJECT_ROOT / ".haste")).resolve()


def competition_defs_dir() -> Path:
    return Path(
        os.environ.get("HASTE_COMPETITION_DEFS", PROJECT_ROOT / "competition_defs")
    ).resolve()


def skill_assets_dir() -> Path:
    return Path(os.environ.get("HASTE_SKILL_ASSETS", PROJECT_ROOT / "skill_assets")).resolve()


def artifacts_dir() -> Path:
    return Path(os.environ.get("HASTE_ARTIFACTS", home_dir() / "artifacts")).resolve()


_PASSWORD_IN_URL = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@/\s]+)@"
)
_PASSWORD_PARAM = re.compile(r"(?i)(password|sslpassword|api_key|apikey|token)=([^&\s]+)")


def redact(text: str) -> str:
    """Hide passwords in URLs and key=value secrets inside ``text``."""
    text = _PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}***@", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}=***", text)
