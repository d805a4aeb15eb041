"""No secret in the repository: no private key, token or password-like assignment in any tracked file.
(That no secret reaches a log is checked where secrets are used: the system drill greps every log for
every password it provisioned.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.drill

REPO = Path(__file__).resolve().parents[2]
PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----")
TOKENS = re.compile(r"\b(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abpr]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9]{32,})\b")
ASSIGNED = re.compile(r"(?i)(password|passwd|secret|token|api_key)\w*\s*[:=]\s*['\"]([^'\"]{8,})['\"]")
# Values that look like assignments but are not secrets, each with its reason.
NOT_SECRETS = {
    "development-only-key-never-used-when-debug-is-off-0123456789abcdef",  # DEBUG only; refused otherwise
    "broker-password",  # the name of the secret file / systemd credential, not the secret
}
SECRET_FILES = re.compile(r"(\.pem|\.key|\.p12|\.pfx|(^|/)passwd|(^|/)id_(rsa|ed25519)|\.env)$")


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_no_key_token_or_secret_file_is_tracked():
    files = tracked()
    assert len(files) > 50
    problems = [f"{name}: a secret's kind of file" for name in files if SECRET_FILES.search(name)]
    for name in files:
        text = (REPO / name).read_text(errors="replace") if (REPO / name).is_file() else ""
        if PRIVATE_KEY.search(text):
            problems.append(f"{name}: a private key")
        problems += [f"{name}: a token {m.group(0)[:8]}..." for m in TOKENS.finditer(text)]
    assert not problems, "\n".join(problems)


def test_no_password_is_written_into_the_code():
    problems = []
    for name in tracked():
        if name.startswith("tests/") or not (REPO / name).is_file():
            continue  # tests make their passwords up, visibly (and nothing secret depends on them)
        for m in ASSIGNED.finditer((REPO / name).read_text(errors="replace")):
            value = m.group(2)
            if value in NOT_SECRETS or "/" in value or "$" in value or "{" in value:
                continue  # a path, a variable or a template: where the secret is, not the secret
            problems.append(f"{name}: {m.group(0)[:60]}")
    assert not problems, "\n".join(problems)


def test_the_scan_finds_what_it_looks_for():
    key = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"  # split, or this file would hold what it hunts
    assert PRIVATE_KEY.search(key) and TOKENS.search("token ghp_" + "a" * 36)
    found = ASSIGNED.search('MQTT_PASSWORD = "s3cr3t-value-42"')
    assert found and found.group(2) == "s3cr3t-value-42"
