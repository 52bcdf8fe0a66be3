"""The one redaction: every file lorakit writes and every tracker it reports to gets values through here.

Three kinds of secret are recognised: a credential inside a value (``scheme://user:password@host``,
``?token=...``), a value under a secret's name (``hf_token``, ``wandb_api_key``, ``*password*``: in a
mapping, or written as ``key: value``, ``key=value``, ``--key value`` in text), and an environment
variable named like one (``HF_TOKEN``, ``*_API_KEY``). Each becomes ``<redacted>``; everything else is
left exactly as it was, so a redacted config still reads as the config.

A value that must reach a program (a trainer's config, a training command) travels outside the files
lorakit keeps: in a private file removed after the run, on a command line, or in the environment. Once
lorakit has seen a value under a secret's name, it is remembered for this process (``remember``), so a
trainer that prints it in plain words (``token hf_...``) has it redacted from its log too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"
ENV_MARKERS = ("TOKEN", "KEY", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL", "CREDENTIALS",
               "AUTH")
# scheme://user:password@host -> scheme://<redacted>@host (a token alone is often the user part).
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s]+)@")
QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")
# key: value, key = value, "key": "value", --key value, --key=value
KEY_VALUE = re.compile(r"(?P<key>--?[A-Za-z][\w.-]*|\b[A-Za-z][\w.-]*)(?P<sep>[\"']?[ \t]*[:=][ \t]*|[ \t]+)"
                       r"(?P<quote>[\"']?)(?P<value>[^\s\"',}\]]+)")
SECRET_KEY = re.compile(r"passw(or)?d|passphrase|secret|api_?key|access_?key|private_?key|credential")
# Special tokens of a tokenizer are not credentials, though their names end in _token.
SPECIAL_TOKENS = ("bos", "eos", "pad", "unk", "sep", "cls", "mask", "image", "video", "audio", "boi", "eoi", "boa",
                  "eoa", "start", "end", "additional_special", "chat", "think")


def is_secret(name: str) -> bool:
    """An environment variable for a secret: one of its words is a marker (``HF_TOKEN``, ``WANDB_API_KEY``) or
    ends in one (``APIKEY``); ``TOKENIZERS_PARALLELISM`` merely starts with one and is not."""
    upper = name.upper()
    if upper.startswith("RCLONE_CONFIG"):  # rclone's config by environment: passwords, tokens
        return True
    words = [w for w in re.split(r"[^A-Z0-9]+", upper) if w]
    return any(word.endswith(marker) for word in words for marker in ENV_MARKERS)


def is_secret_key(key: str) -> bool:
    """A config key for a secret: ``*_token`` (not a tokenizer's ``pad_token``...), ``token``, ``*api_key``,
    ``*password*``, ``*secret*``, ``*access_key``, ``auth``; its last dotted part decides."""
    name = key.rsplit(".", 1)[-1].strip("-_ \"'").lower()
    if SECRET_KEY.search(name) or name in ("token", "auth", "authorization", "cookie"):
        return True
    return name.endswith("_token") and name.removesuffix("_token") not in SPECIAL_TOKENS


_KNOWN: set[str] = set()  # secret values seen in this process, longest first when replaced
MIN_KNOWN = 6  # shorter values ("true", "1") would redact ordinary words


def remember(value: Any) -> None:
    """Keep every secret inside ``value`` (a config: by key name, and URL passwords) so ``redact_text`` also
    removes it where it appears bare."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key) and isinstance(item, str) and len(item) >= MIN_KNOWN:
                _KNOWN.add(item)
            else:
                remember(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            remember(item)
    elif isinstance(value, str):
        for m in URL_USERINFO.finditer(value):
            password = m["userinfo"].partition(":")[2] or m["userinfo"]
            if len(password) >= MIN_KNOWN:
                _KNOWN.add(password)


def redact_text(text: str) -> str:
    """``text`` with its credentials replaced: URL userinfo, secret query parameters, secret ``key: value``, and
    every secret value remembered in this process."""
    for known in sorted(_KNOWN, key=len, reverse=True):
        text = text.replace(known, REDACTED)
    text = URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = QUERY_PARAM.sub(lambda m: f"{m['lead']}{m['name']}={REDACTED}" if is_secret(m["name"]) else m[0], text)
    return KEY_VALUE.sub(_key_value, text)


def _key_value(m: re.Match[str]) -> str:
    key = m["key"]
    if not m["sep"].strip(" \t") and not key.startswith("-"):  # 'key value' is prose; '--key value' is a flag
        return m[0]
    if not is_secret_key(key):
        return m[0]
    return f"{key}{m['sep']}{m['quote']}{REDACTED}"


def redact(value: Any) -> Any:
    """``value`` (dicts, lists, strings) with every secret inside it redacted: by key name in mappings, and by
    ``redact_text`` in every string."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) and isinstance(v, str) and v else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
