"""Language names: one canonical English name per language, from names or ISO 639-1 codes."""

from __future__ import annotations

from fva.errors import FvaError

# ISO 639-1 code -> canonical name, for the languages of MAV-Celeb, CommonVoice's larger locales and
# VoxLingua107's frequent outputs. Unlisted codes and names pass through unchanged (title-cased names).
CODES: dict[str, str] = {
    "en": "English", "de": "German", "ur": "Urdu", "hi": "Hindi", "fr": "French", "es": "Spanish",
    "it": "Italian", "nl": "Dutch", "da": "Danish", "pt": "Portuguese", "ru": "Russian", "pl": "Polish",
    "ca": "Catalan", "eu": "Basque", "fa": "Persian", "ar": "Arabic", "tr": "Turkish", "zh": "Chinese",
    "ja": "Japanese", "ko": "Korean", "sv": "Swedish", "uk": "Ukrainian", "cs": "Czech", "el": "Greek",
    "hu": "Hungarian", "ro": "Romanian", "fi": "Finnish", "pa": "Punjabi", "bn": "Bengali", "ta": "Tamil",
    "te": "Telugu", "mr": "Marathi", "gu": "Gujarati", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai",
    "he": "Hebrew", "no": "Norwegian", "nb": "Norwegian", "cy": "Welsh", "ga": "Irish", "ml": "Malayalam",
}
_NAMES = {name.lower(): name for name in CODES.values()}
_NAMES["bangla"] = "Bengali"  # MAV-Celeb v4's lists and scorer spell it so


def canonical_language(value: str) -> str:
    """Canonical name of a language given as a name, an ISO code, a locale or a VoxLingua label.

    >>> [canonical_language(v) for v in ("de", "german", "en-US", "ur: Urdu", "Swahili", "Bangla")]
    ['German', 'German', 'English', 'Urdu', 'Swahili', 'Bengali']
    """
    text = value.strip()
    if not text:
        raise FvaError("empty language name")
    if ":" in text:  # VoxLingua107 labels look like 'en: English'
        text = text.split(":", 1)[0].strip()
    low = text.lower()
    if low in _NAMES:
        return _NAMES[low]
    base = low.replace("_", "-").split("-")[0]
    if base in CODES:
        return CODES[base]
    return text[:1].upper() + text[1:]
