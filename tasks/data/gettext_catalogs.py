"""Builtin translation pairs and language-labeled text from the system's gettext message catalogs.

Debian-like systems carry compiled catalogs (``<locale_dir>/<lang>/LC_MESSAGES/<domain>.mo``) for the
programs installed: English message ids with their human translations, tens of thousands per major
language. They are read at run time with the stdlib ``gettext`` parser and never committed here.
Messages are taken verbatim, so placeholders (``%s``, ``{name}``, ``%(x)d``) stay intact.
"""
from __future__ import annotations

import functools
import gettext
import hashlib
from pathlib import Path

from archbench.errors import UserError

ENGLISH = "en"  # the catalogs' message ids are English: "en" names that side of a pair
CONTEXT_SEPARATOR = "\x04"  # gettext joins msgctxt and msgid with it
SAMPLE_SALT = b"language-id-sample\x00"


@functools.lru_cache(maxsize=4)
def languages_with_catalogs(locale_dir: str) -> tuple[str, ...]:
    root = Path(locale_dir)
    if not root.is_dir():
        return ()
    return tuple(sorted(d.name for d in root.iterdir() if any((d / "LC_MESSAGES").glob("*.mo"))))


@functools.lru_cache(maxsize=32)
def read_catalogs(locale_dir: str, lang: str) -> tuple[dict[str, dict[str, str]], int]:
    """{domain: {English msgid: translation}} for one language, and how many catalogs were unreadable.

    Plural entries and the header are left out; a message with a context keeps only its msgid.
    """
    files = sorted((Path(locale_dir) / lang / "LC_MESSAGES").glob("*.mo"))
    if not files:
        raise UserError(_no_catalogs_message(locale_dir, lang))
    domains, unreadable = {}, 0
    for path in files:
        try:
            with open(path, "rb") as f:
                translations = gettext.GNUTranslations(f)
        except (OSError, UnicodeDecodeError, ValueError, LookupError):  # a broken or mis-declared catalog
            unreadable += 1
            continue
        # ``_catalog`` is where the stdlib parser keeps the messages; it has no public way to list them
        messages = {}
        for key, value in translations._catalog.items():
            if isinstance(key, str) and key and value:
                messages[key.split(CONTEXT_SEPARATOR, 1)[-1]] = value
        domains[path.stem] = messages
    return domains, unreadable


def _no_catalogs_message(locale_dir: str, lang: str) -> str:
    have = languages_with_catalogs(locale_dir)
    if not have:
        return (f"found no gettext catalogs under '{locale_dir}' (looked for <lang>/LC_MESSAGES/*.mo); "
                "point task.locale_dir at a folder of catalogs, or use task.source=files task.path=data.jsonl")
    shown = ", ".join(have[:40]) + (", ..." if len(have) > 40 else "")
    return (f"no gettext catalogs for language '{lang}' under '{locale_dir}/{lang}/LC_MESSAGES'; languages "
            f"with catalogs there ({len(have)}): {shown}")


def translation_pairs(locale_dir: str, source_lang: str, target_lang: str) -> tuple[list[tuple[str, str]], dict]:
    """(source, target) message pairs for the language pair, in catalog order.

    English on one side pairs each msgid with its translation; two other languages are joined on the
    msgid of the same program's catalog. Pairs whose target copies the source verbatim (untranslated
    entries, names) are dropped: they would reward copying instead of translating.
    """
    if source_lang == target_lang:
        raise UserError(f"task.source_lang and task.target_lang are both '{source_lang}'; pick two languages")
    sides = {}
    unreadable = 0
    for lang in (source_lang, target_lang):
        if lang != ENGLISH:
            sides[lang], bad = read_catalogs(locale_dir, lang)
            unreadable += bad
    pairs: list[tuple[str, str]] = []
    pivot = sides.get(source_lang) or sides[target_lang]
    for domain in sorted(pivot):
        for msgid in pivot[domain]:
            src = msgid if source_lang == ENGLISH else sides[source_lang].get(domain, {}).get(msgid)
            tgt = msgid if target_lang == ENGLISH else sides[target_lang].get(domain, {}).get(msgid)
            if src and tgt and src != tgt:
                pairs.append((src, tgt))
    info = {"locale_dir": locale_dir, "pair": f"{source_lang}-{target_lang}", "unreadable_catalogs": unreadable}
    return pairs, info


def language_id_examples(locale_dir: str, languages: list[str], per_language: int, min_bytes: int,
                         max_bytes: int) -> tuple[list[tuple[str, str]], dict]:
    """(text, language) examples: translated messages of each language.

    Kept: translations that differ from their English msgid and are ``min_bytes``..``max_bytes`` long;
    texts found in more than one language are dropped (their label would be a coin toss). Each
    language keeps its ``per_language`` messages with the smallest salted sha256 (a fixed
    pseudo-random sample, not the first programs alphabetically; salted so that the sample is
    independent of the hash that assigns splits).
    """
    if len(set(languages)) != len(languages):
        raise UserError(f"task.languages lists a language twice: {languages}")
    if len(languages) < 2:
        raise UserError(f"task.languages needs at least two languages, got {languages}")
    texts: dict[str, set[str]] = {}
    unreadable = 0
    for lang in languages:
        domains, bad = read_catalogs(locale_dir, lang)
        unreadable += bad
        texts[lang] = {
            v for messages in domains.values() for k, v in messages.items()
            if v != k and min_bytes <= len(v.encode("utf-8")) <= max_bytes
        }
    seen_in: dict[str, int] = {}
    for lang_texts in texts.values():
        for t in lang_texts:
            seen_in[t] = seen_in.get(t, 0) + 1
    examples = []
    for lang in languages:
        unique = [t for t in texts[lang] if seen_in[t] == 1]
        unique.sort(key=lambda t: hashlib.sha256(SAMPLE_SALT + t.encode("utf-8")).digest())
        examples.extend((t, lang) for t in unique[:per_language])
    info = {"locale_dir": locale_dir, "languages": list(languages), "unreadable_catalogs": unreadable}
    return examples, info
