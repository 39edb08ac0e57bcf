"""The nine canonical emotion labels of the original task, and name normalisation."""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happy",
    "neutral",
    "sad",
    "surprise",
    "uncertain",
)

# Spellings used by common datasets (FER2013, AffectNet, the original folders).
_SYNONYMS = {
    "angry": "anger",
    "anger": "anger",
    "contempt": "contempt",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "uncertain": "uncertain",
}


def canonical(name: str) -> str:
    """Map a dataset's label spelling to one of :data:`EMOTIONS`.

    Raises ``ValueError`` for a name with no canonical counterpart.
    """
    key = name.strip().lower()
    try:
        return _SYNONYMS[key]
    except KeyError:
        raise ValueError(f"unknown emotion label {name!r}; expected one of {', '.join(EMOTIONS)}") from None
